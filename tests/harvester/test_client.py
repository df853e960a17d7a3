"""MetClient over real loopback HTTP against small scripted aiohttp servers (edge cases)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yarl
from aiohttp import web

from met_harvester.client import ApiError, Listing, ListingError, MetClient
from met_harvester.db.withdrawal import judge_listing
from met_harvester.metrics import HarvesterMetrics
from met_harvester.settings import HarvesterSettings

Responder = Callable[[web.Request], Awaitable[web.StreamResponse]]
INCAPSULA = (
    '<html style="height:100%"><head><META NAME="ROBOTS" CONTENT="NOINDEX, NOFOLLOW"></head>'
    "<body><iframe>Request unsuccessful. Incapsula incident ID: 1-2</iframe></body></html>"
)
RECORD = {"objectID": 45734, "title": "Quail and Millet", "tags": None}


def json_answer(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Responder:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(
            status=status,
            text=json.dumps(data) + "\n",
            content_type="application/json",
            headers=headers,
        )

    return respond


def text_answer(text: str, status: int = 200, content_type: str = "text/html") -> Responder:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text=text, content_type=content_type)

    return respond


def bytes_answer(body: bytes) -> Responder:
    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(body=body, content_type="application/json")

    return respond


async def drop(request: web.Request) -> web.StreamResponse:
    """Close the connection without any answer."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


async def truncated(request: web.Request) -> web.StreamResponse:
    """Announce the whole JSON body, send half of it, close."""
    body = (json.dumps(RECORD) + "\n").encode()
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    response.content_length = len(body)
    await response.prepare(request)
    await response.write(body[: len(body) // 2])
    assert request.transport is not None
    request.transport.close()
    return response


def slow(seconds: float, then: Responder) -> Responder:
    async def respond(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(seconds)
        return await then(request)

    return respond


class ScriptedServer:
    """Answers each path with its scripted responders in turn (the last one repeats)."""

    def __init__(self) -> None:
        self.script: dict[str, list[Responder]] = {}
        self.seen: list[web.Request] = []
        self.times: list[float] = []  # monotonic arrival time of each request
        self.in_flight = 0
        self.max_in_flight = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    def on(self, path: str, *responders: Responder) -> None:
        self.script[path] = list(responders)

    def hits(self, path: str) -> int:
        return sum(1 for r in self.seen if r.path.removeprefix("/api") == path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append(request)
        self.times.append(time.monotonic())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            path = request.path.removeprefix("/api")
            queue = self.script.get(path)
            if not queue:
                return web.json_response({"message": "Not Found"}, status=404)
            responder = queue.pop(0) if len(queue) > 1 else queue[0]
            return await responder(request)
        finally:
            self.in_flight -= 1

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/api"

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def server() -> AsyncIterator[ScriptedServer]:
    srv = ScriptedServer()
    await srv.start()
    yield srv
    await srv.stop()


def settings_for(srv: ScriptedServer, tmp_path: Path, **overrides: Any) -> HarvesterSettings:
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "api_url": srv.url,
        "rate": 1000.0,
        "concurrency": 4,
        "timeout": 2.0,
        "max_attempts": 4,
        "block_cooldown": 0.05,
        "retry_wait": 0.01,
        "retry_wait_max": 0.05,
        "user_agent": "met-harvester-test/1",
    } | overrides
    return HarvesterSettings(**values)


def retries(metrics: HarvesterMetrics, reason: str) -> float:
    return metrics.registry.get_sample_value("met_retries_total", {"reason": reason}) or 0.0


def requests(metrics: HarvesterMetrics, endpoint: str, status: str) -> float:
    labels = {"endpoint": endpoint, "status": status}
    return metrics.registry.get_sample_value("met_requests_total", labels) or 0.0


async def test_ok_record_keeps_the_raw_body_and_sends_user_agent(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.on("/objects/45734", json_answer(RECORD))
    metrics = HarvesterMetrics()
    async with MetClient(settings_for(server, tmp_path), metrics=metrics) as client:
        result = await client.get_object(45734)
    assert result.kind == "ok" and result.status == 200 and result.attempts == 1
    assert result.data == RECORD
    assert result.body == json.dumps(RECORD) + "\n"
    assert server.seen[0].headers["User-Agent"] == "met-harvester-test/1"
    assert requests(metrics, "object", "200") == 1


@pytest.mark.parametrize("message", ["ObjectID not found", "Not a valid object"])
async def test_404_is_missing_and_not_retried(
    server: ScriptedServer, tmp_path: Path, message: str
) -> None:
    server.on("/objects/855340", json_answer({"message": message}, status=404))
    metrics = HarvesterMetrics()
    async with MetClient(settings_for(server, tmp_path), metrics=metrics) as client:
        result = await client.get_object(855340)
    assert (result.kind, result.status, result.error) == ("missing", 404, message)
    assert server.hits("/objects/855340") == 1
    assert requests(metrics, "object", "404") == 1
    assert client.limiter.blocks == 0


async def test_400_is_a_permanent_failure(server: ScriptedServer, tmp_path: Path) -> None:
    server.on("/objects/12", json_answer({"message": "could not parse objectID"}, status=400))
    async with MetClient(settings_for(server, tmp_path)) as client:
        result = await client.get_object(12)
    assert result.kind == "failed" and result.status == 400
    assert result.error == "HTTP 400: could not parse objectID"
    assert server.hits("/objects/12") == 1


async def test_5xx_retried_then_ok(server: ScriptedServer, tmp_path: Path) -> None:
    server.on(
        "/objects/1",
        text_answer("<h2>500 - Internal server error.</h2>", status=500),
        text_answer("<h2>Service Unavailable</h2>", status=503),
        json_answer(RECORD | {"objectID": 1}),
    )
    metrics = HarvesterMetrics()
    async with MetClient(settings_for(server, tmp_path), metrics=metrics) as client:
        result = await client.get_object(1)
    assert result.kind == "ok" and result.attempts == 3
    assert retries(metrics, "server_error") == 2
    assert requests(metrics, "object", "503") == 1
    assert client.limiter.blocks == 0  # two errors are not yet a run


async def test_html_200_is_a_block_answer_not_a_record(
    server: ScriptedServer, tmp_path: Path
) -> None:
    """One block page, then the probe (the retry) passes: a stray, the rate stays."""
    server.on("/objects/2", text_answer(INCAPSULA, status=200), json_answer(RECORD))
    metrics = HarvesterMetrics()
    async with MetClient(settings_for(server, tmp_path, rate=50), metrics=metrics) as client:
        result = await client.get_object(2)
        assert client.limiter.strays == 1 and client.limiter.blocks == 0
        assert client.limiter.current_rate == pytest.approx(50.0)
    assert result.kind == "ok" and result.data == RECORD and result.attempts == 2
    assert retries(metrics, "blocked") == 1


async def test_a_blocked_probe_confirms_a_real_block(
    server: ScriptedServer, tmp_path: Path
) -> None:
    """Block page, blocked probe, passing probe: a real block, cut once, its length learned."""
    page = text_answer(INCAPSULA, status=403)
    server.on("/objects/2", page, text_answer(INCAPSULA, status=200), json_answer(RECORD))
    async with MetClient(settings_for(server, tmp_path, rate=50)) as client:
        result = await client.get_object(2)
        limiter = client.limiter
        assert limiter.blocks == 1 and limiter.strays == 0
        assert limiter.current_rate == pytest.approx(25.0)
        first, _, third = server.times
        assert limiter.block_seconds is not None
        assert limiter.block_seconds == pytest.approx(third - first, abs=0.05)
    assert result.kind == "ok" and result.attempts == 3


async def test_403_blocks_pause_everyone_until_the_cooldown_ends(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.on("/objects/3", text_answer(INCAPSULA, status=403), json_answer(RECORD))
    server.on("/objects/33", json_answer(RECORD))
    settings = settings_for(server, tmp_path, block_cooldown=0.3)
    async with MetClient(settings, metrics=HarvesterMetrics()) as client:
        blocked = asyncio.create_task(client.get_object(3))
        while not client.limiter.paused:  # the 403 has come back
            await asyncio.sleep(0.01)
        other = await client.get_object(33)  # asked for after the block: waits out the pause
        result = await blocked
    assert result.kind == "ok" and other.kind == "ok"
    assert client.limiter.strays == 1 and client.limiter.blocks == 0
    first, *later = server.times
    assert len(later) == 2 and min(later) - first >= 0.3


async def test_429_retry_after_is_honoured(server: ScriptedServer, tmp_path: Path) -> None:
    server.on(
        "/objects/4",
        json_answer({"message": "slow down"}, status=429, headers={"Retry-After": "0.2"}),
        json_answer(RECORD),
    )
    settings = settings_for(server, tmp_path, block_cooldown=3600)  # would hang if not honoured
    async with MetClient(settings) as client:
        result = await client.get_object(4)
    assert result.kind == "ok" and result.attempts == 2
    first, probe = server.times
    assert 0.2 <= probe - first < 60


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (truncated, "truncated"),
        (
            text_answer('{"objectID": 5, "title": "Qu', content_type="application/json"),
            "invalid_json",
        ),
        (drop, "connection"),
        (bytes_answer(b'{"objectID": 5, "title": "\xff\xfe"}'), "invalid_json"),
    ],
)
async def test_broken_bodies_and_dropped_connections_are_retried(
    server: ScriptedServer, tmp_path: Path, bad: Responder, reason: str
) -> None:
    server.on("/objects/5", bad, bad, json_answer(RECORD))
    metrics = HarvesterMetrics()
    async with MetClient(settings_for(server, tmp_path), metrics=metrics) as client:
        result = await client.get_object(5)
    assert result.kind == "ok" and result.data == RECORD
    assert server.hits("/objects/5") == 3
    # aiohttp itself resends once when a reused keep-alive connection is found closed
    assert retries(metrics, reason) == result.attempts - 1 >= 1


async def test_timeouts_are_retried(server: ScriptedServer, tmp_path: Path) -> None:
    server.on("/objects/6", slow(1.5, json_answer(RECORD)), json_answer(RECORD))
    metrics = HarvesterMetrics()
    settings = settings_for(server, tmp_path, timeout=0.5)
    async with MetClient(settings, metrics=metrics) as client:
        result = await client.get_object(6)
    assert result.kind == "ok" and result.attempts == 2
    assert retries(metrics, "timeout") == 1
    assert requests(metrics, "object", "timeout") == 1


async def test_gives_up_after_max_attempts_logging_the_id(
    server: ScriptedServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad_json = text_answer("{not json", content_type="application/json")
    server.on("/objects/7", bad_json)
    with caplog.at_level(logging.ERROR, logger="met_harvester.client"):
        async with MetClient(settings_for(server, tmp_path, max_attempts=3)) as client:
            result = await client.get_object(7)
    assert result.kind == "failed" and result.status == 200 and result.attempts == 3
    assert result.body == "{not json"  # kept for the quarantine
    assert result.error is not None and result.error.startswith("invalid_json")
    assert server.hits("/objects/7") == 3
    give_ups = [r for r in caplog.records if getattr(r, "object_id", None) == 7]
    assert give_ups and give_ups[0].levelno == logging.ERROR


async def test_a_run_of_server_errors_counts_as_a_block(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.on("/objects/8", text_answer("down", status=502))
    settings = settings_for(server, tmp_path, max_attempts=6, rate=100)
    async with MetClient(settings) as client:
        result = await client.get_object(8)
    assert result.kind == "failed" and result.status == 502
    assert client.limiter.blocks == 1 and client.limiter.current_rate == pytest.approx(50)


async def test_non_object_json_is_a_failure_not_a_record(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.on("/objects/9", json_answer(["not", "a", "record"]))
    async with MetClient(settings_for(server, tmp_path)) as client:
        result = await client.get_object(9)
    assert result.kind == "failed" and result.error == "expected a JSON object, got list"
    assert server.hits("/objects/9") == 1


async def test_concurrency_bounds_requests_in_flight(
    server: ScriptedServer, tmp_path: Path
) -> None:
    server.on("/objects/10", slow(0.05, json_answer(RECORD)))
    async with MetClient(settings_for(server, tmp_path, concurrency=3)) as client:
        results = await asyncio.gather(*(client.get_object(10) for _ in range(12)))
    assert all(r.kind == "ok" for r in results)
    assert server.max_in_flight == 3


async def test_listing_params_and_empty_bodies(server: ScriptedServer, tmp_path: Path) -> None:
    server.on(
        "/objects",
        json_answer({"total": 3, "objectIDs": [5, 1, 5, 3]}),
        json_answer({"total": 0, "objectIDs": []}),
        json_answer({"total": 0, "objectIDs": None}),
        json_answer({"total": 7, "objectIDs": [2, 4]}),
    )
    metrics = HarvesterMetrics()
    async with MetClient(settings_for(server, tmp_path), metrics=metrics) as client:
        listed = await client.list_objects(metadata_date=dt.date(2024, 3, 9), department_ids=[1, 3])
        assert listed == Listing(ids=[5, 1, 3], total=3)
        assert await client.list_object_ids(department_ids=[999]) == []
        assert await client.list_object_ids() == []
        short = await client.list_objects()  # a total that disagrees with the ids is kept...
    assert short == Listing(ids=[2, 4], total=7)
    assert not judge_listing("full", len(short.ids), short.total, None, 0.02).trusted  # ...and told
    first = server.seen[0]
    assert first.query["metadataDate"] == "2024-03-09"
    assert first.query["departmentIds"] == "1|3"
    assert "metadataDate" not in server.seen[2].query
    assert requests(metrics, "listing", "200") == 4


async def test_listing_errors_are_one_line(server: ScriptedServer, tmp_path: Path) -> None:
    date_error = "Date not valid. Dates must be in the format YYYY-MM-DD e.g. 1987-05-03"
    server.on("/objects", json_answer(date_error, status=400))
    async with MetClient(settings_for(server, tmp_path)) as client:
        with pytest.raises(ListingError) as bad_date:
            await client.list_object_ids(metadata_date=dt.date(2023, 1, 1))
        server.on("/objects", text_answer("<html>Service Unavailable</html>", status=503))
        with pytest.raises(ListingError) as outage:
            await client.list_object_ids()
        server.on("/objects", json_answer({"total": 1, "objectIDs": ["x"]}))
        with pytest.raises(ListingError) as nonsense:
            await client.list_object_ids()
    assert date_error in str(bad_date.value) and "\n" not in str(bad_date.value)
    assert "503" in str(outage.value) and "gave up after 4 attempts" in str(outage.value)
    assert "\n" not in str(outage.value)
    assert "non-integer object id 'x'" in str(nonsense.value)


async def test_departments_and_search(server: ScriptedServer, tmp_path: Path) -> None:
    departments = [{"departmentId": 1, "displayName": "American Decorative Arts"}]
    server.on("/departments", json_answer({"departments": departments}))
    server.on("/search", json_answer({"total": 0, "objectIDs": None}))
    metrics = HarvesterMetrics()
    async with MetClient(settings_for(server, tmp_path), metrics=metrics) as client:
        assert await client.get_departments() == departments
        assert await client.search("sunflowers", hasImages=True) == []
        server.on("/departments", json_answer({"message": "gone"}, status=410))
        with pytest.raises(ApiError, match="HTTP 410: gone"):
            await client.get_departments()
    assert server.seen[1].query["hasImages"] == "true"
    assert requests(metrics, "search", "200") == 1
    assert requests(metrics, "departments", "200") == 1


@pytest.mark.parametrize(
    "base",
    [
        "http://127.0.0.1:8080/public/collection/v1",
        "http://127.0.0.1:8080/",
        "https://collectionapi.metmuseum.org/public/collection/v1/",
        "http://u:p@[::1]:9/a%20b/c",
        "http://127.0.0.1:8080/x?y=1",
        "http://xn--4ca.example/pä th",
    ],
)
def test_request_url_is_the_parsed_base_plus_path(base: str, tmp_path: Path) -> None:
    """The URL built from the base parsed once is the one yarl parses from the joined text."""
    client = MetClient(HarvesterSettings(api_url=base, data_dir=tmp_path))
    for path in ["/objects/123", "/objects", "/search", "/departments", "/a b", "/../x"]:
        built, parsed = client.url_for(path), yarl.URL(client.base_url + path)
        assert (built, str(built), built.raw_path) == (parsed, str(parsed), parsed.raw_path)
