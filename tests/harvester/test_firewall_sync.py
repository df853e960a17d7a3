"""Whole syncs against the fake API's rolling-window firewall, over real loopback HTTP: polite
defaults, stray block pages, block lengths learned across runs, images flowing beside the
record pass, and a kill during the two concurrent passes."""

from __future__ import annotations

import asyncio
import itertools
import json
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

from harvester_support import FakeApiFactory
from test_resume import start_sync

from met_harvester.db.connection import connect_sync
from met_harvester.images.blobstore import BlobStore
from met_harvester.settings import HarvesterSettings
from met_harvester.sync import run_sync
from met_harvester.testing import API_PREFIX, FakeMetAPI, FaultConfig, FirewallConfig


def settings_for(tmp_path: Path, api: FakeMetAPI, **overrides: Any) -> HarvesterSettings:
    """Settings as the CLI builds them: only what a test names counts as given."""
    values: dict[str, Any] = {
        "data_dir": tmp_path,
        "api_url": api.api_url,
        "images": False,
        "retry_wait": 0.01,
        "retry_wait_max": 0.05,
        "max_attempts": 8,
    } | overrides
    return HarvesterSettings(**values)


def query(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = connect_sync(data_dir)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    finally:
        conn.close()


def limiter_state(data_dir: Path, pool: str) -> dict[str, Any]:
    rows = query(data_dir, f"SELECT value FROM harvester_state WHERE key = 'limiter.{pool}'")
    return dict(json.loads(rows[0][0]))


def api_requests(api: FakeMetAPI) -> list[Any]:
    return [r for r in api.requests if r.path.startswith(API_PREFIX)]


async def run_for(settings: HarvesterSettings, seconds: float) -> Any:
    """A sync stopped (as by SIGINT) after `seconds`."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.call_later(seconds, stop.set)
    return await run_sync(settings, stop_event=stop)


async def test_defaults_are_polite_against_a_slow_rolling_window_firewall(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    """No rate options: 1 request/s and 2 in flight from the first request, so a firewall
    allowing 1.5/s over a rolling 30 s never answers with a block page."""
    firewall = FirewallConfig(max_requests=45, window=30.0, block=60.0)
    api = await fake_api_factory(n_objects=100, firewall=firewall)
    report = await run_for(settings_for(tmp_path, api), 6.0)
    assert report.status == "interrupted"
    assert api.firewall is not None and api.firewall.refused == 0
    times = sorted(r.time for r in api_requests(api))
    assert 5 <= len(times) <= 8  # the listing, then one record a second
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.9  # evenly spaced
    assert report.counts["fetched"] >= 4


async def test_stray_block_pages_cost_a_probe_not_a_cut(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    faults = FaultConfig(p403=0.01, p_html200=0.01, listing_faults=False, seed=4)
    api = await fake_api_factory(n_objects=300, faults=faults)
    settings = settings_for(tmp_path, api, rate=300.0, concurrency=8, block_cooldown=0.05)
    report = await run_sync(settings)
    assert report.status == "completed" and report.counts["failed"] == 0
    assert query(tmp_path, "SELECT COUNT(*) FROM objects") == [(300,)]
    state = limiter_state(tmp_path, "api")
    assert state["strays"] >= 2 and state["blocks"] == 0
    assert state["current_rate"] == 300.0  # strays cost a probe each, never the rate


async def test_block_length_is_learned_and_used_by_the_next_run(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    """A firewall blocking 1.5 s above 60 requests/s: the first run finds the block's length by
    probes at growing intervals and keeps it; the next run's first block is probed near it."""
    firewall = FirewallConfig(max_requests=60, window=1.0, block=1.5)
    api = await fake_api_factory(n_objects=150, firewall=firewall)
    settings = settings_for(tmp_path, api, rate=150.0, concurrency=8, block_cooldown=0.3)
    report = await run_sync(settings)
    assert report.status == "completed"
    assert query(tmp_path, "SELECT COUNT(*) FROM objects") == [(150,)]
    first = limiter_state(tmp_path, "api")
    assert first["blocks"] >= 1 and 1.5 <= first["block_seconds"] <= 4.0
    assert first["block_rate"] is not None and first["current_rate"] < 150.0
    # The next run, pushed back to 150/s, runs into the same firewall: it probes near 1.5 s.
    mark = len(api.requests)
    again = settings_for(tmp_path, api, rate=150.0, initial_rate=150.0, block_cooldown=0.3)
    report = await run_sync(again, full=True)
    assert report.status == "completed"
    assert [r for r in api.requests[mark:] if r.fault == "firewall"]
    second = limiter_state(tmp_path, "api")
    assert second["blocks"] > first["blocks"]
    assert second["block_seconds"] <= 1.1 * first["block_seconds"] + 0.3


async def test_images_flow_while_the_records_are_fetched(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    api = await fake_api_factory(n_objects=90, seed=6)
    settings = settings_for(
        tmp_path,
        api,
        rate=30.0,
        concurrency=4,
        images=True,
        image_hosts=[api.image_host],
        image_rate=100.0,
        batch_size=10,
    )
    report = await run_sync(settings)
    assert report.status == "completed" and report.images is not None
    records = sorted(r.time for r in api.requests if r.path.startswith(API_PREFIX + "/objects/"))
    images = sorted(r.time for r in api.requests if r.path.startswith("/images/"))
    assert images and records
    third = records[0] + (records[-1] - records[0]) / 3
    assert images[0] < third  # the first image within the first third of the record pass
    expected = query(
        tmp_path,
        "SELECT COUNT(*) FROM objects WHERE is_public_domain = 1 "
        "AND COALESCE(primary_image_small, primary_image) IS NOT NULL",
    )
    assert query(tmp_path, "SELECT COUNT(*) FROM images WHERE status = 'ok'") == expected
    state = limiter_state(tmp_path, "images")
    assert state["ceiling"] == 100.0 and state["current_rate"] == 100.0


KILL_SYNC = ("--rate", "40", "--batch-size", "5", "--image-rate", "15")
"""A sync slow enough to be killed while both pools are busy."""


def _image_rows_sound(data_dir: Path) -> None:
    """Every `ok` row points at a complete blob with the recorded size; the file is sound."""
    store = BlobStore.for_data_dir(data_dir)
    conn = sqlite3.connect(data_dir / "met.sqlite")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        for sha, size in conn.execute("SELECT sha256, bytes FROM images WHERE status = 'ok'"):
            assert store.has(sha, size)
    finally:
        conn.close()


async def test_a_kill_during_both_passes_loses_nothing_and_the_next_run_goes_on(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    api = await fake_api_factory(n_objects=120, seed=6)
    proc = await start_sync(tmp_path, api, "--image-hosts", api.image_host, options=KILL_SYNC)
    deadline = time.monotonic() + 60
    while not (api.count("/images/") >= 3 and api.count("/objects/") >= 20):
        assert proc.returncode is None and time.monotonic() < deadline
        await asyncio.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    _image_rows_sound(tmp_path)
    stored = query(tmp_path, "SELECT COUNT(*) FROM objects")[0][0]
    assert 0 < stored < 120
    ok_before = query(tmp_path, "SELECT COUNT(*) FROM images WHERE status = 'ok'")[0][0]
    proc = await start_sync(tmp_path, api, "--image-hosts", api.image_host, options=KILL_SYNC)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()[-2000:]
    _image_rows_sound(tmp_path)
    assert query(tmp_path, "SELECT COUNT(*) FROM objects") == [(120,)]
    expected = query(
        tmp_path,
        "SELECT COUNT(*) FROM objects WHERE is_public_domain = 1 "
        "AND COALESCE(primary_image_small, primary_image) IS NOT NULL",
    )
    assert query(tmp_path, "SELECT COUNT(*) FROM images WHERE status = 'ok'") == expected
    assert expected[0][0] > ok_before
    state = limiter_state(tmp_path, "api")
    assert state["ceiling"] == 40.0
