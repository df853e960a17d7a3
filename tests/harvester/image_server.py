"""Test helpers for the image mirror: real images made with Pillow, hostile bodies, a small
programmable aiohttp image server (also used as a *canary* that must see no request), and a way
to put objects into a mirror's DB with plain SQL.

Run as a script, it is the child process of the kill -9 test:
    python tests/harvester/image_server.py sync DATA_DIR HOST:PORT
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import struct
import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web
from PIL import Image

from met_harvester.db.connection import connect_sync, open_db, utc_now
from met_harvester.settings import HarvesterSettings

# --- bodies -------------------------------------------------------------------------------


def make_jpeg(seed: int, size: tuple[int, int] = (64, 48), **save: Any) -> bytes:
    """A real JPEG whose pixels depend on `seed` (so different seeds give different bytes)."""
    img = Image.new("RGB", size, ((seed * 37) % 256, (seed * 91) % 256, (seed * 53) % 256))
    for x in range(0, size[0], 7):
        img.putpixel((x, (x * seed) % size[1]), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **save)
    return buf.getvalue()


def make_noisy_jpeg(seed: int, size: tuple[int, int] = (320, 240)) -> bytes:
    """A real JPEG of random pixels: large for its size (about 0.8 bytes per pixel)."""
    import random

    rng = random.Random(seed)
    img = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def make_png(seed: int, size: tuple[int, int] = (40, 30), mode: str = "RGB") -> bytes:
    """A real PNG whose pixels depend on `seed`."""
    img = Image.new(mode, size, (seed % 256, 10, 200) if mode == "RGB" else seed % 256)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A small PNG (~100 kB) that would decode to width x height 1-bit pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + (width + 7) // 8)
    rows_per_step = max(1, (1 << 20) // len(row))
    parts = []
    done = 0
    while done < height:
        n = min(rows_per_step, height - done)
        parts.append(comp.compress(row * n))
        done += n
    parts.append(comp.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


HTML_PAGE = (
    b"<html><head><title>Request unsuccessful</title></head><body>Request unsuccessful. "
    b"Incapsula incident ID: 0-000000000000000</body></html>"
)


def sha256(data: bytes) -> str:
    """Hex sha256 of `data`."""
    return hashlib.sha256(data).hexdigest()


# --- a programmable image server ------------------------------------------------------------


@dataclass
class Route:
    """How the server answers one path.

    Attributes:
        body: bytes sent (for status 200).
        content_type: the Content-Type header.
        status: HTTP status.
        location: Location header (redirects).
        etag / last_modified: validators; a matching conditional request gets 304.
        declared_length: Content-Length sent instead of len(body) (lies about the size).
        cut_after: send only this many bytes, then drop the connection.
        chunk: bytes per write; delay: seconds between writes (slow streams).
    """

    body: bytes = b""
    content_type: str = "image/jpeg"
    status: int = 200
    location: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    declared_length: int | None = None
    cut_after: int | None = None
    chunk: int = 65536
    delay: float = 0.0


@dataclass
class ImageServer:
    """An aiohttp server on a loopback address, port 0, answering from `routes`."""

    host: str = "127.0.0.1"
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def netloc(self) -> str:
        """`host:port`, as an `--image-hosts` entry."""
        return f"{self.host}:{self.port}"

    def url(self, path: str) -> str:
        """The absolute URL of `path` on this server."""
        return f"http://{self.netloc}{path}"

    def count(self, path: str | None = None) -> int:
        """Requests seen (for one path, or all)."""
        return sum(1 for _m, p, _h in self.requests if path is None or p == path)

    async def start(self) -> ImageServer:
        """Start listening; returns self."""
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.method, request.path, dict(request.headers)))
        route = self.routes.get(request.path)
        if route is None:
            return web.Response(status=404, text="not found")
        headers: dict[str, str] = {}
        if route.location:
            headers["Location"] = route.location
        if route.etag:
            headers["ETag"] = route.etag
        if route.last_modified:
            headers["Last-Modified"] = route.last_modified
        if route.status == 200 and (
            (route.etag and request.headers.get("If-None-Match") == route.etag)
            or (
                route.last_modified
                and request.headers.get("If-Modified-Since") == route.last_modified
            )
        ):
            return web.Response(status=304, headers=headers)
        if route.status != 200:
            return web.Response(
                status=route.status,
                body=route.body,
                headers=headers,
                content_type=route.content_type,
            )
        resp = web.StreamResponse(status=200, headers=headers)
        resp.content_type = route.content_type
        resp.content_length = (
            route.declared_length if route.declared_length is not None else len(route.body)
        )
        await resp.prepare(request)
        body = route.body if route.cut_after is None else route.body[: route.cut_after]
        for start in range(0, len(body), route.chunk):
            await resp.write(body[start : start + route.chunk])
            if route.delay:
                await asyncio.sleep(route.delay)
        if route.cut_after is not None or (
            route.declared_length is not None and route.declared_length != len(body)
        ):
            assert request.transport is not None
            request.transport.close()
            return resp
        await resp.write_eof()
        return resp


# --- the mirror's DB ------------------------------------------------------------------------


def put_objects(
    data_dir: Path,
    objects: Iterable[tuple[int, str | None, str | None, list[str] | None]],
    *,
    public_domain: bool = True,
) -> None:
    """Insert or replace objects `(object_id, primary_image_small, primary_image,
    additional_images)` with just the columns the image pass reads."""
    conn = connect_sync(data_dir)
    now = utc_now()
    with conn:
        for object_id, small, original, additional in objects:
            raw = json.dumps(
                {
                    "objectID": object_id,
                    "primaryImageSmall": small or "",
                    "primaryImage": original or "",
                    "additionalImages": additional or [],
                }
            )
            conn.execute(
                "INSERT INTO objects (object_id, raw_json, content_sha256, first_seen_at, "
                "fetched_at, is_public_domain, primary_image, primary_image_small, "
                "additional_images) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT(object_id) DO UPDATE SET raw_json = excluded.raw_json, "
                "primary_image = excluded.primary_image, "
                "primary_image_small = excluded.primary_image_small, "
                "additional_images = excluded.additional_images, fetched_at = excluded.fetched_at",
                (
                    object_id,
                    raw,
                    sha256(raw.encode()),
                    now,
                    now,
                    int(public_domain),
                    original,
                    small,
                    json.dumps(additional or []),
                ),
            )
    conn.close()


def image_rows(data_dir: Path, *, current_only: bool = True) -> list[dict[str, Any]]:
    """Rows of the `images` table as dicts, ordered by image_id."""
    conn = connect_sync(data_dir)
    conn.row_factory = lambda cur, row: {d[0]: v for d, v in zip(cur.description, row, strict=True)}
    where = "WHERE is_current = 1" if current_only else ""
    rows = list(conn.execute(f"SELECT * FROM images {where} ORDER BY image_id"))
    conn.close()
    return rows


def test_settings(data_dir: Path, hosts: list[str], **extra: Any) -> HarvesterSettings:
    """Fast settings for loopback tests."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "image_hosts": hosts,
        "image_rate": 1000.0,
        "image_concurrency": 4,
        "max_attempts": 2,
        "block_cooldown": 0.05,
        "retry_wait": 0.01,
        "retry_wait_max": 0.05,
        "timeout": 5.0,
    }
    values.update(extra)
    return HarvesterSettings(**values)


test_settings.__test__ = False  # type: ignore[attr-defined]  # not a pytest test


async def _child_sync(data_dir: Path, host: str) -> None:
    from met_harvester.images.sync import sync_images

    db = await open_db(data_dir)
    try:
        await sync_images(db, test_settings(data_dir, [host], image_concurrency=8))
    finally:
        await db.close()


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "sync":
        asyncio.run(_child_sync(Path(sys.argv[2]), sys.argv[3]))
    else:
        sys.exit("usage: image_server.py sync DATA_DIR HOST:PORT")
