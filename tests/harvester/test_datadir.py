"""The data-dir lock: one holder at a time, the holder named, stale locks taken over."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

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
