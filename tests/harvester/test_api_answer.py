"""What an API answer may be: the client's 404 rule, body cap with bounded decoding, and
redirects that stay on the API host (a scripted loopback server and a loopback canary)."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from test_client import (
    RECORD,
    Responder,
    ScriptedServer,
    json_answer,
    settings_for,
    text_answer,
)

from met_harvester.client import MetClient


@pytest.fixture
async def api() -> AsyncIterator[ScriptedServer]:
    """A scripted loopback API (see test_client)."""
    scripted = ScriptedServer()
    await scripted.start()
    yield scripted
    await scripted.stop()


def encoded(body: bytes, encoding: str) -> Responder:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=body, headers={"Content-Type": "application/json", "Content-Encoding": encoding}
        )

    return respond


def redirect(location: str) -> Responder:
    async def respond(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(location)

    return respond


async def test_only_the_apis_json_404_is_missing(api: ScriptedServer, tmp_path: Path) -> None:
    iis_page = "<html><body><h2>404 - File or directory not found.</h2></body></html>"
    api.on("/objects/1", text_answer(iis_page, status=404), json_answer(RECORD))
    api.on("/objects/2", json_answer({"message": "Not a valid object"}, status=404))
    api.on("/objects/3", text_answer("", status=404, content_type="text/plain"))
    api.on("/objects/4", json_answer({"error": "gone"}, status=404))
    async with MetClient(settings_for(api, tmp_path)) as client:
        first = await client.get_object(1)  # the HTML page was retried: the record came
        assert first.kind == "ok" and first.attempts == 2
        assert (await client.get_object(2)).kind == "missing"
        empty = await client.get_object(3)
        other = await client.get_object(4)
    assert empty.kind == "failed" and "not the API's answer" in (empty.error or "")
    assert other.kind == "failed" and api.hits("/objects/4") > 1


async def test_bodies_are_decoded_in_bounded_steps(api: ScriptedServer, tmp_path: Path) -> None:
    body = (json.dumps(RECORD) + "\n").encode()
    raw_deflate = zlib.compressobj(wbits=-15)
    api.on("/objects/1", encoded(gzip.compress(body), "gzip"))
    api.on("/objects/2", encoded(zlib.compress(body), "deflate"))
    api.on("/objects/3", encoded(raw_deflate.compress(body) + raw_deflate.flush(), "deflate"))
    bomb = gzip.compress(b" " * (64 << 20), 9)  # 64 MiB of blanks in ~64 KB
    api.on("/objects/4", encoded(bomb, "gzip"))
    api.on("/objects/5", encoded(body, "br"))
    settings = settings_for(api, tmp_path, max_body_bytes=1 << 20)
    async with MetClient(settings) as client:
        for object_id in (1, 2, 3):
            result = await client.get_object(object_id)
            assert result.kind == "ok" and result.body == body.decode(), object_id
        bombed = await client.get_object(4)
        brotli = await client.get_object(5)
    assert bombed.kind == "failed" and "larger than the 1,048,576-byte cap" in (bombed.error or "")
    assert api.hits("/objects/4") == 1  # refused, not retried
    assert brotli.kind == "failed" and "unsupported Content-Encoding 'br'" in (brotli.error or "")


async def test_redirects_stay_on_the_api_host(api: ScriptedServer, tmp_path: Path) -> None:
    canary = ScriptedServer()
    await canary.start()
    try:
        api.on("/objects/1", redirect(api.url + "/objects/2"))
        api.on("/objects/2", json_answer(RECORD))
        api.on("/objects/3", redirect(canary.url + "/objects/2"))
        canary.on("/objects/2", json_answer(RECORD))
        async with MetClient(settings_for(api, tmp_path)) as client:
            followed = await client.get_object(1)
            refused = await client.get_object(3)
        assert canary.seen == []
    finally:
        await canary.stop()
    assert followed.kind == "ok"
    assert refused.kind == "failed" and "to another host refused" in (refused.error or "")
