"""The changed window of an incremental pass: a pass killed (SIGKILL) half-way resumes where it
stopped; the pass that finishes vouches only for changes after the window began."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import signal
from pathlib import Path

from harvester_support import FakeApiFactory, object_fetches
from test_resume import read, start_sync
from test_sync import make_settings, query

from met_harvester.sync import run_sync
from met_harvester.sync_plan import metadata_date
from met_harvester.sync_window import WINDOW_KEY, WindowCursor
from met_harvester.testing import FaultConfig


def window_state(data_dir: Path) -> dict[str, object] | None:
    rows = read(data_dir, f"SELECT value FROM harvester_state WHERE key = '{WINDOW_KEY}'")
    return json.loads(rows[0][0]) if rows else None


async def test_killed_incremental_pass_resumes_where_it_stopped(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    api = await fake_api_factory(n_objects=300, seed=21)
    await run_sync(make_settings(tmp_path, api))
    for object_id in list(api.collection.object_ids)[::2]:
        api.mutate(object_id, title=f"changed {object_id}")
    since = query(tmp_path, "SELECT started_at FROM sync_runs")[0][0]
    day = metadata_date(since)
    changed = sorted(int(i) for i in api.collection.list_ids(day))
    assert len(changed) >= 150
    api.set_faults(FaultConfig(latency=0.05))  # the window takes seconds: time to kill it
    mark = len(api.requests)
    proc = await start_sync(tmp_path, api)
    for _ in range(3000):  # until a good part of the window is committed
        state = window_state(tmp_path)
        if (
            state
            and isinstance(state["done_through"], int)
            and state["done_through"] >= changed[60]
        ):
            break
        await asyncio.sleep(0.01)
    proc.kill()
    await proc.wait()
    assert proc.returncode == -signal.SIGKILL
    state = window_state(tmp_path)
    assert state is not None and state["metadata_date"] == day.isoformat()
    done_through = state["done_through"]
    assert isinstance(done_through, int) and done_through < changed[-1]
    killed_start = query(tmp_path, "SELECT started_at FROM sync_runs ORDER BY run_id DESC")[0][0]
    api.set_faults(None)
    resumed = len(api.requests)
    proc = await start_sync(tmp_path, api)
    _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    asked = object_fetches(api, resumed)
    assert not {i for i in changed if i <= done_through} & set(asked)  # not started over
    assert {i for i in changed if i > done_through} <= set(asked)
    assert set(object_fetches(api, mark)) >= set(changed)  # together: the whole window
    for object_id in changed:  # and the mirror holds the changed records
        [(raw,)] = query(tmp_path, "SELECT raw_json FROM objects WHERE object_id = ?", object_id)
        assert json.loads(raw) == api.collection.record(object_id, api.base_url)
    [(status, changes_from, counts)] = query(
        tmp_path,
        "SELECT status, changes_from, counts_json FROM sync_runs ORDER BY run_id DESC LIMIT 1",
    )
    assert status == "completed" and changes_from == killed_start
    assert json.loads(counts)["changed_resumed"] == sum(1 for i in changed if i <= done_through)
    assert window_state(tmp_path) is None  # the window is done


def test_window_cursor_moves_only_over_a_committed_prefix() -> None:
    cursor = WindowCursor([3, 5, 8, 13])
    assert cursor.advance([5, 99]) is None  # 3 not yet committed
    assert cursor.advance([3]) == 5
    assert cursor.advance([13]) is None
    assert cursor.advance([8]) == 13


def test_since_is_clamped_to_now_and_overlaps_two_days() -> None:
    now = "2026-12-03T10:00:00.000Z"
    assert metadata_date("2099-01-01T00:00:00.000Z", now=now) == dt.date(2026, 12, 1)
    assert metadata_date("2026-11-20T23:59:00.000Z", now=now) == dt.date(2026, 11, 18)
