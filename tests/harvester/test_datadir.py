"""The data-dir lock: one holder at a time, the holder named, stale locks taken over."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from harvester_support import FakeApiFactory

from met_harvester.datadir import DataDirLock, LockHeldError, is_locked, read_holder

HOLD_SCRIPT = """
import sys, time
from met_harvester.datadir import DataDirLock
lock = DataDirLock(sys.argv[1], command="test-holder")
lock.acquire()
print("held", flush=True)
time.sleep(60)
"""


def _start_holder(data_dir: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD_SCRIPT, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_holder_is_refused_with_the_holder_named(tmp_path: Path) -> None:
    proc = _start_holder(tmp_path)
    try:
        assert is_locked(tmp_path)
        with pytest.raises(LockHeldError) as err:
            DataDirLock(tmp_path).acquire()
        message = str(err.value)
        assert f"pid {proc.pid}" in message
        assert "test-holder" in message
        assert read_holder(tmp_path / "harvester.lock")["pid"] == proc.pid
    finally:
        proc.kill()
        proc.wait()


def test_stale_lock_of_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    proc = _start_holder(tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    # The file still names the dead holder, but nobody holds the flock any more.
    assert read_holder(tmp_path / "harvester.lock")["pid"] == proc.pid
    assert not is_locked(tmp_path)
    with DataDirLock(tmp_path, command="sync") as lock:
        assert lock.held
        assert read_holder(tmp_path / "harvester.lock")["pid"] == os.getpid()
    assert not is_locked(tmp_path)


def test_lock_is_released_and_reusable(tmp_path: Path) -> None:
    for _ in range(2):
        with DataDirLock(tmp_path):
            # flock is per open file: a probe through another descriptor sees it held.
            assert is_locked(tmp_path)
            with pytest.raises(LockHeldError):
                DataDirLock(tmp_path).acquire()
        assert not is_locked(tmp_path)
    assert not (tmp_path / "harvester.lock").read_text().strip()


async def test_import_csv_racing_a_sync_waits_its_turn(
    tmp_path: Path, fake_api_factory: FakeApiFactory
) -> None:
    """`import-csv` is a writer too: while a sync holds the data dir it refuses with exit 3,
    naming the holder, and writes nothing; once the sync is done it imports."""
    from csvgen import write_met_csv
    from harvester_support import harvester_env
    from test_resume import read, start_sync, wait_for_objects

    from met_harvester.testing import FaultConfig

    api = await fake_api_factory(n_objects=200, seed=9, faults=FaultConfig(latency=0.2))
    csv_path = tmp_path / "MetObjects.csv"
    write_met_csv(csv_path, 50, seed=3)
    data = tmp_path / "data"
    sync = await start_sync(data, api)
    await wait_for_objects(data, sync, 5)

    async def import_csv() -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "met_harvester", "import-csv", str(csv_path),
            "--data-dir", str(data),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=harvester_env(),
        )  # fmt: skip
        _, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, err.decode()

    code, err = await import_csv()
    assert code == 3 and "data dir is locked by sync" in err, err
    assert sync.returncode is None  # the sync went on meanwhile
    assert read(data, "SELECT COUNT(*) FROM csv_objects") == [(0,)]
    api.set_faults(None)
    _, sync_err = await sync.communicate()
    assert sync.returncode == 0, sync_err.decode()
    code, err = await import_csv()
    assert code == 0, err
    assert read(data, "SELECT COUNT(*) FROM csv_objects") == [(50,)]
    assert len(read(data, "SELECT object_id FROM objects")) == 200
