"""A hostile API and image host, over real loopback HTTP: one `met-harvester sync` process
survives every record and image below, exits 0, stores the good records exactly, never
contacts the canary, and stays small in memory."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from harvester_support import harvester_env
from test_sync import query

from met_harvester.testing import CollectionConfig, SyntheticCollection
from met_harvester.testing.render import decompression_bomb_png

PREFIX = "/public/collection/v1"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _gzip_bomb() -> bytes:
    """~1 GB of zeros as a ~1 MB gzip body."""
    out = gzip.compress(b"0" * (16 << 20), 9)
    return out * 64  # concatenated gzip members decode to 64 x 16 MiB


class HostileServer:
    """Listing, records and images; `canary` counts any request it gets."""

    def __init__(self) -> None:
        self.collection = SyntheticCollection(CollectionConfig(n_objects=50, seed=26))
        self.good = list(self.collection.object_ids)[:10]
        self.bodies: dict[int, str] = {}
        self.special: dict[int, Handler] = {}
        self.canary_hits = 0
        self.base = ""
        self.canary_base = ""

    def record(self, object_id: int, **fields: Any) -> dict[str, Any]:
        rec = self.collection.record(object_id, self.base)
        rec.update(fields)
        return rec

    async def listing(self, _: web.Request) -> web.Response:
        ids = sorted([*self.good, *self.bodies, *self.special])
        return web.json_response({"total": len(ids), "objectIDs": ids})

    async def departments(self, _: web.Request) -> web.Response:
        return web.json_response({"departments": [{"departmentId": 1, "displayName": "One"}]})

    async def obj(self, request: web.Request) -> web.StreamResponse:
        object_id = int(request.match_info["id"])
        if object_id in self.special:
            return await self.special[object_id](request)
        if object_id in self.bodies:
            return web.Response(text=self.bodies[object_id], content_type="application/json")
        return web.Response(
            text=json.dumps(self.record(object_id)) + "\n", content_type="application/json"
        )

    async def image(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "trickle.jpg":  # one byte a second, for ever (well: ten minutes)
            resp = web.StreamResponse(headers={"Content-Type": "image/jpeg"})
            resp.content_length = 600
            await resp.prepare(request)
            with contextlib.suppress(ConnectionResetError):  # the client gave up: fine
                for _ in range(600):
                    await resp.write(b"\xff")
                    await asyncio.sleep(1.0)
            return resp
        if name == "bomb.png":
            return web.Response(body=decompression_bomb_png(), content_type="image/png")
        if name == "to-canary.jpg":
            raise web.HTTPFound(f"{self.canary_base}/stolen.jpg")
        return web.Response(status=404, text="<html>404</html>", content_type="text/html")

    async def canary(self, _: web.Request) -> web.Response:
        self.canary_hits += 1
        return web.json_response({"message": "you should not be here"})


@pytest.fixture
async def hostile() -> AsyncIterator[HostileServer]:
    server = HostileServer()
    api = web.Application()
    api.router.add_get(PREFIX + "/objects", server.listing)
    api.router.add_get(PREFIX + "/objects/{id}", server.obj)
    api.router.add_get(PREFIX + "/departments", server.departments)
    api.router.add_get("/images/{name}", server.image)
    canary = web.Application()
    canary.router.add_route("*", "/{tail:.*}", server.canary)
    runners = [web.AppRunner(api), web.AppRunner(canary)]
    sites = []
    for runner, host in zip(runners, ("127.0.0.1", "127.0.0.2"), strict=True):
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        sites.append(site)
    port = sites[0]._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    canary_port = sites[1]._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.base = f"http://127.0.0.1:{port}"
    server.canary_base = f"http://127.0.0.2:{canary_port}"
    yield server
    for runner in runners:
        await runner.cleanup()


def arm(server: HostileServer) -> dict[str, int]:
    """Install the hostile records; returns name -> object id."""
    ids = iter(list(server.collection.object_ids)[10:])
    names: dict[str, int] = {}

    def body(name: str, text: str) -> None:
        names[name] = object_id = next(ids)
        server.bodies[object_id] = text.replace("@ID@", str(object_id))

    def special(name: str, handler: Handler) -> None:
        names[name] = next(ids)
        server.special[names[name]] = handler

    def rec(name: str, **fields: Any) -> None:
        object_id = next(ids)
        names[name] = object_id
        server.bodies[object_id] = json.dumps(server.record(object_id, **fields)) + "\n"

    rec("int_overflow", objectBeginDate=2**70, objectEndDate=-(2**80))
    rec("wrong_type", objectBeginDate="circa 1900", isPublicDomain="perhaps")
    rec("giant_title", title="x" * 200_000)
    rec("surrogate", title="\ud800 broken")
    rec("constituent_overflow", constituents=[{"constituentID": 2**70, "name": "Big"}])
    rec(
        "canary_image",
        primaryImageSmall=f"{server.canary_base}/a.jpg",
        primaryImage="",
        isPublicDomain=True,
    )
    rec(
        "metadata_image",
        primaryImageSmall="http://169.254.169.254/latest/meta-data",
        primaryImage="",
        isPublicDomain=True,
    )
    rec(
        "trickle_image",
        primaryImageSmall=f"{server.base}/images/trickle.jpg",
        primaryImage="",
        isPublicDomain=True,
    )
    rec(
        "bomb_image",
        primaryImageSmall=f"{server.base}/images/bomb.png",
        primaryImage="",
        isPublicDomain=True,
    )
    rec(
        "redirect_image",
        primaryImageSmall=f"{server.base}/images/to-canary.jpg",
        primaryImage="",
        isPublicDomain=True,
    )
    body("deep_nesting", _deep(100_000))
    body("deep_field", '{"objectID": @ID@, "measurements": ' + _deep(5_000) + "}")
    body("null_body", "null")
    body("wrong_id", '{"objectID": 1}')
    special("non_utf8", _bytes(b'{"objectID": \xff\xfe}', "application/json"))
    special("gzip_bomb", _gzip_answer(_gzip_bomb()))
    special(
        "too_large",
        _bytes(b'{"objectID": 0, "pad": "' + b"x" * 3_000_000 + b'"}', "application/json"),
    )
    special("redirect_canary", _redirect(lambda: f"{server.canary_base}/objects/1"))
    special("redirect_other_port", _redirect(lambda: "//127.0.0.1:9/objects/1"))
    special(
        "html_404",
        _bytes(b"<html><body>404 - File or directory not found.</body></html>", "text/html", 404),
    )
    special("empty_404", _bytes(b"", "text/plain", 404))
    special("json_404", _bytes(b'{"message":"Not a valid object"}\n', "application/json", 404))
    special(
        "html_200", _bytes(b"<html>Request unsuccessful. Incapsula incident</html>", "text/html")
    )
    special("slow_body", _trickle_json())
    return names


def _bytes(data: bytes, ctype: str, status: int = 200) -> Handler:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(body=data, status=status, headers={"Content-Type": ctype})

    return handler


def _gzip_answer(data: bytes) -> Handler:
    async def handler(_: web.Request) -> web.Response:
        return web.Response(
            body=data, headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}
        )

    return handler


def _redirect(where: Callable[[], str]) -> Handler:
    async def handler(_: web.Request) -> web.Response:
        raise web.HTTPFound(where())

    return handler


def _trickle_json() -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client gave up: fine
            for _ in range(600):
                await resp.write(b" ")
                await asyncio.sleep(1.0)
        return resp

    return handler


# Runs the command after argv[1] and writes its peak RSS (KiB) to argv[1]: the pytest process's
# own RUSAGE_CHILDREN would also count every earlier test's subprocesses (training runs).
PEAK_RSS_OF_CHILD = (
    "import resource, subprocess, sys; rc = subprocess.call(sys.argv[2:]); "
    "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
    "sys.exit(rc)"
)


async def test_a_hostile_api_and_image_host_are_survived(
    tmp_path: Path, hostile: HostileServer
) -> None:
    names = arm(hostile)
    host = hostile.base.removeprefix("http://")
    peak_file = tmp_path / "peak_kib"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        PEAK_RSS_OF_CHILD,
        str(peak_file),
        sys.executable,
        "-m",
        "met_harvester",
        "sync",
        "--data-dir",
        str(tmp_path),
        "--api-url",
        hostile.base + PREFIX,
        "--rate",
        "500",
        "--timeout",
        "3",
        "--max-attempts",
        "2",
        "--max-body-bytes",
        "2000000",
        "--image-hosts",
        host,
        "--image-timeout",
        "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=harvester_env(MET_HARVESTER_RETRY_WAIT="0.01", MET_HARVESTER_BLOCK_COOLDOWN="0.01"),
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-3000:]
    assert b"Traceback" not in err
    peak_kib = int(peak_file.read_text())  # the sync process's own peak, not the suite's
    assert 0 < peak_kib < 600 * 1024  # under 600 MB, gzip bomb and all
    assert hostile.canary_hits == 0
    stored = dict(query(tmp_path, "SELECT object_id, raw_json FROM objects"))
    for object_id in hostile.good:  # the good records, exactly as served
        assert json.loads(stored[object_id]) == hostile.record(object_id)
    issues = dict(query(tmp_path, "SELECT object_id, typed_issues FROM objects"))
    for name in ("int_overflow", "wrong_type", "giant_title", "surrogate"):
        assert stored[names[name]] == hostile.bodies[names[name]], name  # raw JSON kept
        assert issues[names[name]], name
    [(begin, end)] = query(
        tmp_path,
        "SELECT object_begin_date, object_end_date FROM objects WHERE object_id = ?",
        names["int_overflow"],
    )
    assert (begin, end) == (None, None)
    assert "outside SQLite's 64-bit range" in issues[names["int_overflow"]]
    assert names["constituent_overflow"] in stored
    quarantined = dict(query(tmp_path, "SELECT object_id, error FROM quarantine"))
    assert "nested too deeply" in quarantined[names["deep_nesting"]]
    assert {names["null_body"], names["wrong_id"]} <= set(quarantined)
    assert names["deep_field"] in stored or names["deep_field"] in quarantined
    failures = dict(query(tmp_path, "SELECT object_id, last_error FROM fetch_failures"))
    assert "cap" in failures[names["gzip_bomb"]] and "cap" in failures[names["too_large"]]
    assert "another host refused" in failures[names["redirect_canary"]]
    assert "another host refused" in failures[names["redirect_other_port"]]
    for name in ("html_404", "empty_404", "html_200", "slow_body", "non_utf8"):
        assert names[name] in failures, name
    assert query(tmp_path, "SELECT object_id FROM missing_objects") == [(names["json_404"],)]
    images = dict(query(tmp_path, "SELECT object_id, error FROM images WHERE status != 'ok'"))
    assert "image-timeout" in images[names["trickle_image"]]
    assert "not in the image hosts" in images[names["canary_image"]]
    assert names["metadata_image"] in images and names["bomb_image"] in images
    assert "redirect" in images[names["redirect_image"]]
