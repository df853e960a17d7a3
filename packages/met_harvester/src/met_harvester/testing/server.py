"""`FakeMetAPI`: an aiohttp server that behaves like the Met collection API and its image host.

Records and images are served from the same host: the API under `/public/collection/v1`, images
under `/images/{small|original}/{id}[-v{n}].{jpg|png}` and `/images/additional/{id}/{k}[-v{n}].{ext}`
(with ETag / Last-Modified and 304 answers), and admin endpoints for subprocess tests:

- `GET  /_admin/stats`: request and object counts, firewall blocks, fault knobs.
- `GET  /_admin/requests?prefix=/objects/[&full=1]`: `{"count": n}` (and every request with full=1).
- `POST /_admin/reset`: forget the request log.
- `POST /_admin/objects` (body `{"object_id": n}` or `{}`): add an object, answers `{"object_id"}`.
- `POST /_admin/objects/{id}/mutate` (body: fields to set): change a record, bump metadataDate.
- `POST /_admin/objects/{id}/remove`: withdraw an object.
- `POST /_admin/objects/{id}/change-image`: new images at new URLs.
- `POST /_admin/faults` (body: FaultConfig fields): replace all fault knobs (`{}` clears them).
- `POST /_admin/firewall` (body: FirewallConfig fields, or nothing to turn it off).

The admin endpoints are never subject to faults or the firewall.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import random
import re
import time
from collections import Counter
from dataclasses import asdict, dataclass
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from aiohttp import web

from met_harvester.testing.collection import CollectionConfig, SyntheticCollection
from met_harvester.testing.faults import (
    BAD_GATEWAY_PAGE,
    IMAGE_NOT_FOUND_PAGE,
    SERVER_ERROR_PAGE,
    SERVICE_UNAVAILABLE_PAGE,
    FaultConfig,
    Firewall,
    FirewallConfig,
    incapsula_page,
)
from met_harvester.testing.render import decompression_bomb_png
from met_harvester.testing.vocab import DEPARTMENTS

log = logging.getLogger("met_harvester.testing.server")

API_PREFIX = "/public/collection/v1"
DATE_NOT_VALID = '"Date not valid. Dates must be in the format YYYY-MM-DD e.g. 1987-05-03"\n'
_IMAGE_NAME = re.compile(r"^(\d+)(?:-v(\d+))?\.(jpg|png)$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MET_HEADERS = {"X-Cdn": "Imperva", "X-Powered-By": "ARR/3.0, ASP.NET"}
_FAULT = web.RequestKey("fake_api_fault", str)
_LOGGED = web.RequestKey("fake_api_logged", bool)
_ARRIVED = web.RequestKey("fake_api_arrived", float)
_BLOCK_HEADERS = {"Cache-Control": "no-cache, no-store", "Connection": "close"}


@dataclass(frozen=True)
class RequestRecord:
    """One request seen by the fake API: `time` is when it arrived (epoch seconds), `status` is 0
    for a dropped connection, `fault` names the fault knob (or "firewall") that answered it."""

    time: float
    method: str
    path: str
    query: str
    status: int
    client_ip: str
    fault: str | None = None


class _Drop(Exception):
    """Close the connection (after `status` headers were sent, if not 0)."""

    def __init__(self, fault: str, status: int = 0) -> None:
        super().__init__(fault)
        self.fault = fault
        self.status = status


def _json_body(body: str, status: int = 200) -> web.Response:
    """A JSON answer exactly as the Met sends it: `application/json`, body ending in a newline."""
    headers = {"Content-Type": "application/json", **_MET_HEADERS}
    return web.Response(body=body.encode(), status=status, headers=headers)


def _json_response(data: Any, status: int = 200) -> web.Response:
    return _json_body(json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n", status)


def _html(body: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=body, status=status, content_type="text/html", headers=headers)


class FakeMetAPI:
    """A fake Met API on loopback. See the module docstring for the URL layout.

    Args:
        collection: The synthetic collection to serve (default: 5,000 objects, seed 0).
        faults: Fault knobs (none by default); replace at runtime with `set_faults`.
        firewall: Imperva-like per-IP blocking (off by default); `set_firewall` at runtime.
        shuffle_listing: Return /objects ids in a different order on every call, like the Met.
    """

    def __init__(
        self,
        collection: SyntheticCollection | None = None,
        *,
        faults: FaultConfig | None = None,
        firewall: FirewallConfig | None = None,
        shuffle_listing: bool = True,
    ) -> None:
        self.collection = collection or SyntheticCollection(CollectionConfig())
        self.faults = faults or FaultConfig()
        self.firewall = Firewall(firewall) if firewall else None
        self.shuffle_listing = shuffle_listing
        self.requests: list[RequestRecord] = []
        self._rng = random.Random(self.faults.seed)
        self._runner: web.AppRunner | None = None
        self.host = ""
        self.port = 0
        self.app = self._make_app()

    # ----- lifecycle ----------------------------------------------------------------------------
    def _make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.on_response_prepare.append(self._on_prepare)
        r = app.router
        r.add_route("GET", API_PREFIX + "/objects", self._objects)
        r.add_route("GET", API_PREFIX + "/objects/", self._objects_slash)
        r.add_route("*", API_PREFIX + "/objects/{object_id}", self._object)
        r.add_route("GET", API_PREFIX + "/departments", self._departments)
        r.add_route("GET", API_PREFIX + "/search", self._search)
        r.add_route("GET", "/images/{variant:small|original}/{name}", self._image)
        r.add_route("GET", "/images/additional/{object_id:\\d+}/{name}", self._image)
        r.add_route("GET", "/_admin/stats", self._admin_stats)
        r.add_route("GET", "/_admin/requests", self._admin_requests)
        r.add_route("POST", "/_admin/reset", self._admin_reset)
        r.add_route("POST", "/_admin/objects", self._admin_add)
        r.add_route("POST", "/_admin/objects/{object_id}/mutate", self._admin_mutate)
        r.add_route("POST", "/_admin/objects/{object_id}/remove", self._admin_remove)
        r.add_route("POST", "/_admin/objects/{object_id}/change-image", self._admin_change_image)
        r.add_route("POST", "/_admin/faults", self._admin_faults)
        r.add_route("POST", "/_admin/firewall", self._admin_firewall)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on host:port (port 0 picks a free port)."""
        self._runner = web.AppRunner(self.app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        sockets = getattr(site._server, "sockets", None)
        if not sockets:
            raise RuntimeError(f"fake API could not listen on {host}:{port}")
        self.host, self.port = sockets[0].getsockname()[:2]

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeMetAPI:
        if self._runner is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """http://HOST:PORT"""
        return f"http://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        """The API base URL, e.g. http://127.0.0.1:PORT/public/collection/v1."""
        return self.base_url + API_PREFIX

    @property
    def image_host(self) -> str:
        """HOST:PORT of the image URLs in records (for --image-hosts)."""
        return f"{self.host}:{self.port}"

    # ----- state --------------------------------------------------------------------------------
    def count(self, path_prefix: str = "") -> int:
        """Requests whose path starts with `path_prefix`. A prefix not starting with the API
        prefix, /images or /_admin is taken relative to the API: count("/objects/") counts record
        fetches."""
        prefix = path_prefix
        if prefix and not prefix.startswith((API_PREFIX, "/images", "/_admin")):
            prefix = API_PREFIX + prefix
        return sum(1 for r in self.requests if r.path.startswith(prefix))

    def reset_requests(self) -> None:
        """Forget the request log."""
        self.requests.clear()

    def fetched_ids(self) -> Counter[int]:
        """How often each /objects/{id} was requested."""
        out: Counter[int] = Counter()
        base = API_PREFIX + "/objects/"
        for r in self.requests:
            if r.path.startswith(base) and r.path[len(base) :].isdigit():
                out[int(r.path[len(base) :])] += 1
        return out

    def mutate(self, object_id: int, **fields: Any) -> None:
        """Change fields of a record and bump its metadataDate to now."""
        self.collection.mutate(object_id, **fields)

    def add_object(self, object_id: int | None = None) -> int:
        """Add an object (metadataDate now); returns its id."""
        return self.collection.add_object(object_id)

    def remove_object(self, object_id: int) -> None:
        """Withdraw an object: it leaves the listing, /objects/{id} answers 404 "Not a valid object"."""
        self.collection.remove_object(object_id)

    def change_image(self, object_id: int) -> None:
        """Give an object new images at new URLs (bumps metadataDate)."""
        self.collection.change_image(object_id)

    def set_faults(self, faults: FaultConfig | None) -> None:
        """Replace the fault knobs (None: no faults)."""
        self.faults = faults or FaultConfig()
        self._rng = random.Random(self.faults.seed)

    def set_firewall(self, firewall: FirewallConfig | None) -> None:
        """Turn the firewall on with new settings, or off with None."""
        self.firewall = Firewall(firewall) if firewall else None

    # ----- middleware: log, firewall, faults ----------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        request[_ARRIVED] = time.time()
        path = request.path
        ip = request.remote or ""
        kind = (
            "admin"
            if path.startswith("/_admin")
            else "image"
            if path.startswith("/images")
            else "api"
        )
        try:
            response, fault = await self._dispatch(request, handler, kind, ip)
            if fault is not None:
                request[_FAULT] = fault
            return response  # logged by _on_prepare when its headers go out
        except web.HTTPException as exc:
            self._log(request, exc.status, None)
            raise
        except _Drop as drop:
            self._log(request, drop.status, drop.fault)
            if request.transport is not None:
                request.transport.abort()
            raise asyncio.CancelledError from None

    def _log(self, request: web.Request, status: int, fault: str | None) -> None:
        if request.get(_LOGGED):
            return
        request[_LOGGED] = True
        self.requests.append(
            RequestRecord(
                request.get(_ARRIVED, time.time()),
                request.method,
                request.path,
                request.query_string,
                status,
                request.remote or "",
                fault,
            )
        )

    async def _on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        # Log before the body is sent, so a client never sees an answer that is not yet logged.
        self._log(request, response.status, request.get(_FAULT))

    async def _dispatch(
        self, request: web.Request, handler: Any, kind: str, ip: str
    ) -> tuple[web.StreamResponse, str | None]:
        if kind == "admin":
            return await handler(request), None
        fw = self.firewall
        if fw is not None and (kind == "api" or fw.config.include_images) and fw.check(ip):
            status = 200 if self._rng.random() < fw.config.p_html200 else 403
            return _html(incapsula_page(self._rng), status, _BLOCK_HEADERS), "firewall"
        if kind == "image":
            return await self._image_faults(request, handler)
        f = self.faults
        if f.latency or f.latency_jitter:
            await asyncio.sleep(f.latency + self._rng.random() * f.latency_jitter)
        is_record = "object_id" in request.match_info
        if not (is_record or f.listing_faults):
            return await handler(request), None
        fault = f.draw(self._rng, FaultConfig.API_FAULTS)
        if fault is None:
            return await handler(request), None
        if fault == "p403":
            return _html(incapsula_page(self._rng), 403, _BLOCK_HEADERS), fault
        if fault == "p429":
            headers = {"Retry-After": f"{f.retry_after:g}"}
            resp = _json_response({"message": "Too Many Requests"}, 429)
            resp.headers.update(headers)
            return resp, fault
        if fault == "p500":
            return _html(SERVER_ERROR_PAGE, 500), fault
        if fault == "p503":
            return _html(SERVICE_UNAVAILABLE_PAGE, 503), fault
        if fault == "p_html200":
            return _html(incapsula_page(self._rng), 200, _BLOCK_HEADERS), fault
        if fault == "p_drop":
            raise _Drop(fault)
        if fault == "p_html404":
            if is_record:
                return _html(IMAGE_NOT_FOUND_PAGE, 404), fault
            return await handler(request), None
        response = await handler(request)
        if (
            not isinstance(response, web.Response)
            or response.status != 200
            or response.body is None
        ):
            return response, None
        body = bytes(response.body)  # type: ignore[arg-type]
        if fault == "p_invalid_json":
            bad = body[: len(body) // 2] + b"<!-- upstream error -->\n"
            return _json_body(bad.decode(errors="replace")), fault
        return await self._truncated(request, body, "application/json", fault), fault

    async def _truncated(
        self, request: web.Request, body: bytes, content_type: str, fault: str
    ) -> web.StreamResponse:
        """Announce the whole body, send half of it, then close the connection."""
        request[_FAULT] = fault
        resp = web.StreamResponse(status=200, headers={"Content-Type": content_type})
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[: max(1, len(body) // 2)])
        raise _Drop(fault, 200)

    async def _image_faults(
        self, request: web.Request, handler: Any
    ) -> tuple[web.StreamResponse, str | None]:
        f = self.faults
        if f.image_latency:
            await asyncio.sleep(f.image_latency)
        fault = f.draw(self._rng, FaultConfig.IMAGE_FAULTS)
        if fault == "p_image_html":
            return _html(SERVICE_UNAVAILABLE_PAGE, 200), fault
        if fault == "p_image_bomb":
            bomb = await asyncio.get_running_loop().run_in_executor(None, decompression_bomb_png)
            return web.Response(body=bomb, content_type="image/png"), fault
        response = await handler(request)
        if fault is None or not isinstance(response, web.Response) or response.status != 200:
            return response, None
        body = bytes(response.body)  # type: ignore[arg-type]
        if fault == "p_image_wrong_type":
            return web.Response(body=body, content_type="text/plain"), fault
        if fault == "p_image_truncate":
            return await self._truncated(request, body, response.content_type, fault), fault
        # p_image_slow: stream in small chunks at image_slow_rate bytes/s.
        request[_FAULT] = fault
        resp = web.StreamResponse(status=200, headers={"Content-Type": response.content_type})
        resp.content_length = len(body)
        await resp.prepare(request)
        chunk = 4096
        for start in range(0, len(body), chunk):
            await asyncio.sleep(chunk / max(1.0, f.image_slow_rate))
            await resp.write(body[start : start + chunk])
        return resp, fault  # aiohttp ends the body after the middleware has logged it

    # ----- API handlers -------------------------------------------------------------------------
    async def _objects(self, request: web.Request) -> web.Response:
        date_text = request.query.get("metadataDate", "")
        since: dt.date | None = None
        if date_text:
            try:
                if not _DATE.match(date_text):
                    raise ValueError(date_text)
                since = dt.date.fromisoformat(date_text)
            except ValueError:
                return _json_body(DATE_NOT_VALID, 400)
        depts_text = request.query.get("departmentIds", "")
        depts: list[int] | None = None
        if depts_text:
            try:
                depts = [int(d) for d in depts_text.split("|")]
            except ValueError:
                return _html(BAD_GATEWAY_PAGE, 502)
        ids = self.collection.list_ids(since, depts)
        total = len(ids)
        if since is None and self.faults.listing_truncate > 0 and total:
            keep = self._rng_np().random(total) >= self.faults.listing_truncate
            ids = ids[keep]  # an incident: ids left out, `total` still the full count
        if self.shuffle_listing and len(ids) > 1:
            ids = ids[self._rng_np().permutation(len(ids))]
        id_list = ",".join(map(str, ids.tolist()))
        body = f'{{"total":{total},"objectIDs":[{id_list}]}}\n'
        return _json_body(body)

    def _rng_np(self) -> Any:
        import numpy as np

        return np.random.default_rng(self._rng.getrandbits(63))

    async def _objects_slash(self, request: web.Request) -> web.Response:
        return _json_response({"message": "Not Found"}, 404)

    async def _object(self, request: web.Request) -> web.Response:
        if request.method != "GET":
            return web.Response(status=405, headers={"Allow": "OPTIONS, GET"})
        text = request.match_info["object_id"]
        try:
            object_id = int(text)
        except ValueError:
            return _json_response({"message": "could not parse objectID"}, 400)
        coll = self.collection
        if coll.is_removed(object_id):
            return _json_response({"message": "Not a valid object"}, 404)
        if not coll.exists(object_id):
            return _json_response({"message": "ObjectID not found"}, 404)
        return _json_response(coll.record(object_id, self.base_url))

    async def _departments(self, request: web.Request) -> web.Response:
        depts = [{"departmentId": i, "displayName": name} for i, name in DEPARTMENTS]
        return _json_response({"departments": depts})

    async def _search(self, request: web.Request) -> web.Response:
        q = request.query.get("q")
        if q is None:
            return _html(BAD_GATEWAY_PAGE, 502)
        has_images = request.query.get("hasImages")
        dept = request.query.get("departmentId")
        ids = self.collection.search_ids(
            q,
            has_images=None if has_images is None else has_images == "true",
            department_id=int(dept) if dept and dept.lstrip("-").isdigit() else None,
            tags_only=request.query.get("tags") == "true",
        )
        if len(ids) == 0:
            return _json_response({"total": 0, "objectIDs": None})
        return _json_response({"total": len(ids), "objectIDs": ids.tolist()})

    # ----- images -------------------------------------------------------------------------------
    async def _image(self, request: web.Request) -> web.Response:
        m = _IMAGE_NAME.match(request.match_info["name"])
        if not m:
            return _html(IMAGE_NOT_FOUND_PAGE, 404)
        object_id, version = int(m.group(1)), int(m.group(2) or 0)
        variant = request.match_info.get("variant", "")
        if "object_id" in request.match_info:  # /images/additional/{id}/{n}.jpg
            variant, object_id = f"additional-{object_id}", int(request.match_info["object_id"])
        coll = self.collection
        try:
            if not coll.is_public_domain(object_id) or coll.is_removed(object_id):
                raise KeyError(object_id)
            if version > coll.image_version(object_id):
                raise KeyError(version)
            if m.group(3) != coll.image_spec(object_id).ext:
                raise KeyError(m.group(3))
            job = coll.image_job(object_id, variant, version)
        except KeyError:
            return _html(IMAGE_NOT_FOUND_PAGE, 404)
        etag = (
            '"'
            + hashlib.blake2b(
                repr(job[0] + (coll.config.seed,)).encode(), digest_size=8
            ).hexdigest()
            + '"'
        )
        modified = dt.datetime(2019, 6, 1, tzinfo=dt.UTC) + dt.timedelta(
            days=(object_id * 7919 + version * 31) % 1500
        )
        headers = {"ETag": etag, "Last-Modified": format_datetime(modified, usegmt=True)}
        if self._not_modified(request, etag, modified):
            return web.Response(status=304, headers=headers)
        loop = asyncio.get_running_loop()
        data, content_type = await loop.run_in_executor(None, coll.render_job, job)
        return web.Response(body=data, content_type=content_type, headers=headers)

    @staticmethod
    def _not_modified(request: web.Request, etag: str, modified: dt.datetime) -> bool:
        inm = request.headers.get("If-None-Match")
        if inm is not None:
            return inm.strip() == "*" or etag in [t.strip() for t in inm.split(",")]
        ims = request.headers.get("If-Modified-Since")
        if ims:
            try:
                return modified <= parsedate_to_datetime(ims)
            except (TypeError, ValueError):
                return False
        return False

    # ----- admin --------------------------------------------------------------------------------
    async def _admin_stats(self, request: web.Request) -> web.Response:
        return _json_response(
            {
                "requests": len(self.requests),
                "objects": len(self.collection),
                "record_fetches": self.count("/objects/"),
                "listing_calls": sum(1 for r in self.requests if r.path == API_PREFIX + "/objects"),
                "image_fetches": self.count("/images/"),
                "firewall_blocks": self.firewall.blocks if self.firewall else 0,
                "firewall_refused": self.firewall.refused if self.firewall else 0,
                "faults": asdict(self.faults),
            }
        )

    async def _admin_requests(self, request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        out: dict[str, Any] = {"count": self.count(prefix)}
        if request.query.get("full") == "1":
            out["requests"] = [asdict(r) for r in self.requests]
        return _json_response(out)

    async def _admin_reset(self, request: web.Request) -> web.Response:
        self.requests.clear()
        return _json_response({"ok": True})

    async def _admin_id(self, request: web.Request) -> int:
        try:
            return int(request.match_info["object_id"])
        except ValueError:
            raise web.HTTPBadRequest(text="object id must be an integer") from None

    async def _admin_add(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        try:
            object_id = self.add_object((body or {}).get("object_id"))
        except ValueError as exc:
            return _json_response({"error": str(exc)}, 409)
        return _json_response({"object_id": object_id})

    async def _admin_mutate(self, request: web.Request) -> web.Response:
        object_id = await self._admin_id(request)
        fields = await request.json() if request.can_read_body else {}
        try:
            self.mutate(object_id, **(fields or {"title": f"Changed {time.time():.0f}"}))
        except KeyError:
            return _json_response({"error": f"unknown object {object_id}"}, 404)
        return _json_response({"object_id": object_id})

    async def _admin_remove(self, request: web.Request) -> web.Response:
        object_id = await self._admin_id(request)
        try:
            self.remove_object(object_id)
        except KeyError:
            return _json_response({"error": f"unknown object {object_id}"}, 404)
        return _json_response({"object_id": object_id})

    async def _admin_change_image(self, request: web.Request) -> web.Response:
        object_id = await self._admin_id(request)
        try:
            self.change_image(object_id)
        except KeyError:
            return _json_response({"error": f"unknown object {object_id}"}, 404)
        return _json_response({"object_id": object_id})

    async def _admin_faults(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        try:
            self.set_faults(FaultConfig.from_dict(body or {}))
        except (TypeError, ValueError) as exc:
            return _json_response({"error": str(exc)}, 400)
        return _json_response(asdict(self.faults))

    async def _admin_firewall(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        try:
            self.set_firewall(FirewallConfig(**body) if body else None)
        except TypeError as exc:
            return _json_response({"error": str(exc)}, 400)
        return _json_response({"firewall": body or None})
