"""Resumability: `python -m met_harvester sync` killed (SIGKILL) or stopped (SIGINT/SIGTERM)
mid-sync, then run again. Real subprocesses against the fake API served from this test process."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from harvester_support import harvester_env, object_fetches

from met_harvester.testing import FakeMetAPI, FaultConfig

FAST_NO_IMAGES = ("--rate", "2000", "--concurrency", "4", "--batch-size", "10", "--no-images")
"""The sync options of `start_sync` unless a caller gives its own."""


async def start_sync(
    data_dir: Path, api: FakeMetAPI, *extra: str, options: Sequence[str] = FAST_NO_IMAGES
) -> asyncio.subprocess.Process:
    """`python -m met_harvester sync` of `api` into `data_dir`, in a subprocess: `options`,
    then `extra`; retry waits and block pauses of 10 ms, nothing else from the environment."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "met_harvester",
        "sync",
        "--data-dir",
        str(data_dir),
        "--api-url",
        api.api_url,
        *options,
        *extra,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=harvester_env(MET_HARVESTER_RETRY_WAIT="0.01", MET_HARVESTER_BLOCK_COOLDOWN="0.01"),
    )


def read(data_dir: Path, sql: str) -> list[tuple[Any, ...]]:
    """A read-only look at the mirror (empty while the DB does not exist yet)."""
    path = data_dir / "met.sqlite"
    if not path.exists():
        return []
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return [tuple(r) for r in conn.execute(sql)]
    except sqlite3.OperationalError:  # tables not created yet
        return []
    finally:
        conn.close()


def stored_ids(data_dir: Path) -> set[int]:
    return {r[0] for r in read(data_dir, "SELECT object_id FROM objects")}


async def wait_for_objects(data_dir: Path, proc: asyncio.subprocess.Process, n: int) -> None:
    for _ in range(3000):
        if proc.returncode is not None:
            raise AssertionError(f"sync ended early with {proc.returncode}")
        if len(stored_ids(data_dir)) >= n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {n} objects stored in time")


def expected_tag_links(api: FakeMetAPI) -> int:
    return sum(
        len({t["term"] for t in api.collection.record(i, api.base_url)["tags"] or []})
        for i in api.collection.object_ids
    )


async def finish_and_check(tmp_path: Path, api: FakeMetAPI, before: set[int]) -> None:
    """Run sync to the end; it must fetch exactly what was missing, each id once."""
    mark = len(api.requests)
    proc = await start_sync(tmp_path, api)
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert b"sync incremental completed" in out
    again = object_fetches(api, mark)
    all_ids = set(api.collection.object_ids)
    assert len(again) == len(set(again))  # nothing asked twice
    assert set(again) == all_ids - before  # nothing stored was asked again, nothing left out
    assert stored_ids(tmp_path) == all_ids
    assert read(tmp_path, "SELECT COUNT(*) FROM object_versions") == [(0,)]
    assert read(tmp_path, "SELECT COUNT(*) FROM object_tags") == [(expected_tag_links(api),)]
    statuses = read(tmp_path, "SELECT status FROM sync_runs ORDER BY run_id")
    assert statuses == [("interrupted",), ("completed",)]


@pytest.mark.parametrize("kill_after", [1, 150])
async def test_sigkill_mid_sync_then_resume(
    tmp_path: Path, fake_api_factory: Any, kill_after: int
) -> None:
    api = await fake_api_factory(n_objects=400, seed=2, faults=FaultConfig(latency=0.01))
    proc = await start_sync(tmp_path, api)
    await wait_for_objects(tmp_path, proc, kill_after)
    proc.kill()
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = stored_ids(tmp_path)
    assert kill_after <= len(before) < 400
    assert read(tmp_path, "SELECT status FROM sync_runs") == [("running",)]
    api.set_faults(None)
    await finish_and_check(tmp_path, api, before)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
async def test_sigint_sigterm_commit_in_flight_work(
    tmp_path: Path, fake_api_factory: Any, signum: int, code: int
) -> None:
    api = await fake_api_factory(n_objects=400, seed=3, faults=FaultConfig(latency=0.01))
    proc = await start_sync(tmp_path, api)
    await wait_for_objects(tmp_path, proc, 60)
    proc.send_signal(signum)
    out, err = await proc.communicate()
    assert proc.returncode == code, err.decode()
    assert b"Traceback" not in err
    assert b"sync full interrupted" in out
    before = stored_ids(tmp_path)
    assert 60 <= len(before) < 400
    # every record the server sent was committed before exiting
    assert set(object_fetches(api)) == before
    [(status, counts)] = read(tmp_path, "SELECT status, counts_json FROM sync_runs")
    assert status == "interrupted"
    assert f'"fetched":{len(before)}' in counts
    api.set_faults(None)
    await finish_and_check(tmp_path, api, before)
