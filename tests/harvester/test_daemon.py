"""The daemon as users run it: a subprocess against the fake API on loopback."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sqlite3
import sys
import time
from pathlib import Path

import aiohttp
import pytest
from harvester_support import harvester_env

from met_harvester.testing import FakeMetAPI, FaultConfig

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(api: FakeMetAPI) -> dict[str, str]:
    return harvester_env(  # settings from the environment
        MET_HARVESTER_IMAGE_HOSTS=api.image_host, MET_HARVESTER_BLOCK_COOLDOWN="0.2"
    )


async def _start_daemon(
    api: FakeMetAPI, data_dir: Path, port: int, *extra: str
) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "met_harvester",
        "daemon",
        "--data-dir",
        str(data_dir),
        "--api-url",
        api.api_url,
        "--rate",
        "500",
        "--listen",
        f"127.0.0.1:{port}",
        "--log-level",
        "INFO",
        *extra,
        env=_env(api),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def _get(port: int, path: str) -> tuple[int, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, await resp.text()


async def _wait_for(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await predicate():
                return
        except (aiohttp.ClientError, sqlite3.Error, OSError):
            pass
        await asyncio.sleep(0.1)
    raise AssertionError("condition not reached in time")


def _count(data_dir: Path, sql: str) -> int:
    conn = sqlite3.connect(f"file:{data_dir / 'met.sqlite'}?mode=ro", uri=True)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} ([0-9.e+]+)$", text, re.MULTILINE)
    assert match, f"{name} not in /metrics"
    return float(match.group(1))


async def test_two_scheduled_runs_then_exit(fake_api_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    api = await fake_api_factory(n_objects=60)
    proc = await _start_daemon(api, tmp_path, _free_port(), "--interval", "1s", "--max-runs", "2")
    _, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    runs = _count(tmp_path, "SELECT count(*) FROM sync_runs WHERE status = 'completed'")
    assert runs == 2
    listed = len(api.collection.object_ids)
    assert _count(tmp_path, "SELECT count(*) FROM objects") == listed
    # The second run was incremental: far fewer record requests than two full passes.
    assert api.count("/public/collection/v1/objects/") < 2 * listed
    # Logs are JSON lines when not on a terminal.
    assert b'"logger": "met_harvester' in err


async def test_initial_rate_flag_sets_where_the_api_pool_starts(
    fake_api_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # --rate 500 alone would start the pool at 500/s; --initial-rate starts it lower, and a
    # run this short (about a second) is far from the 30 clean seconds of a climb.
    api = await fake_api_factory(n_objects=20)
    proc = await _start_daemon(
        api, tmp_path, _free_port(), "--initial-rate", "40", "--no-images", "--max-runs", "1"
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert _count(tmp_path, "SELECT count(*) FROM objects") == len(api.collection.object_ids)
    conn = sqlite3.connect(f"file:{tmp_path / 'met.sqlite'}?mode=ro", uri=True)
    try:
        rates = dict(conn.execute("SELECT key, value FROM harvester_state WHERE key LIKE 'api.%'"))
    finally:
        conn.close()
    assert float(rates["api.current_rate"]) == 40.0
    assert float(rates["api.ceiling"]) == 500.0


async def test_metrics_match_db_lock_refuses_and_sigterm_exits_clean(
    fake_api_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    api = await fake_api_factory(n_objects=80)
    port = _free_port()
    proc = await _start_daemon(api, tmp_path, port, "--interval", "1h", "--grace", "5")
    try:

        async def first_run_done() -> bool:
            status, body = await _get(port, "/readyz")
            return status == 200 and '"runs_completed": 1' in body

        await _wait_for(first_run_done)
        status, _ = await _get(port, "/healthz")
        assert status == 200
        _, text = await _get(port, "/metrics")
        objects = _count(tmp_path, "SELECT count(*) FROM objects WHERE withdrawn_at IS NULL")
        images = _count(
            tmp_path, "SELECT count(DISTINCT sha256) FROM images WHERE status='ok' AND is_current=1"
        )
        assert objects == len(api.collection.object_ids)
        assert images > 0
        assert _metric(text, "met_objects_new_total") == objects
        assert _metric(text, 'met_db_rows{kind="objects"}') == objects
        assert _metric(text, 'met_db_rows{kind="images"}') == images
        assert _metric(text, "met_images_stored_total") == images
        assert _metric(text, "met_last_successful_sync_timestamp_seconds") > 0

        # A manual sync and a second daemon are refused, naming the holder.
        for args in (["sync"], ["daemon", "--listen", f"127.0.0.1:{_free_port()}"]):
            other = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "met_harvester",
                *args,
                "--data-dir",
                str(tmp_path),
                "--api-url",
                api.api_url,
                env=_env(api),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await asyncio.wait_for(other.communicate(), timeout=60)
            assert other.returncode == 3
            assert f"pid {proc.pid}" in err.decode()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), timeout=30)
    assert proc.returncode == 0


async def test_sigterm_mid_sync_exits_zero_within_grace_and_db_verifies(
    fake_api_factory, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    api = await fake_api_factory(n_objects=300, faults=FaultConfig(latency=0.05))
    port = _free_port()
    proc = await _start_daemon(
        api,
        tmp_path,
        port,
        "--interval",
        "1h",
        "--grace",
        "3",
        "--concurrency",
        "2",
        "--rate",
        "40",
    )

    async def some_stored() -> bool:
        return (tmp_path / "met.sqlite").exists() and _count(
            tmp_path, "SELECT count(*) FROM objects"
        ) >= 20

    await _wait_for(some_stored)
    stored_before = _count(tmp_path, "SELECT count(*) FROM objects")
    assert stored_before < len(api.collection.object_ids), "the sync finished before the signal"
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    elapsed = time.monotonic() - sent
    assert proc.returncode == 0, err.decode()[-2000:]
    assert elapsed < 3 + 10  # grace plus process start-up slack; not a performance figure
    assert _count(tmp_path, "SELECT count(*) FROM sync_runs WHERE status = 'interrupted'") == 1
    assert _count(tmp_path, "SELECT count(*) FROM objects") >= stored_before

    verify = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "met_harvester",
        "verify",
        "--data-dir",
        str(tmp_path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(verify.communicate(), timeout=60)
    assert verify.returncode == 0, (out + err).decode()
