"""One sync per data dir: an exclusive lock file holding the owner's pid and host.

The lock is an `fcntl.flock` on `<data-dir>/harvester.lock`, so a process that dies (even by
SIGKILL) releases it and a stale file is taken over safely; the pid/host written inside it name
the holder in the refusal message. Keep the data dir on a local file system: flock over NFS
depends on the server's lock support.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from pathlib import Path
from types import TracebackType
from typing import Any

from met_harvester.db.connection import utc_now

LOCK_FILENAME = "harvester.lock"


class LockHeldError(RuntimeError):
    """Another live process holds the data-dir lock."""

    def __init__(self, path: Path, holder: dict[str, Any]) -> None:
        self.path = path
        self.holder = holder
        who = f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}"
        what = holder.get("command", "a sync")
        since = holder.get("since", "?")
        super().__init__(
            f"data dir is locked by {what} ({who}, since {since}); lock file {path}. "
            "Wait for it to finish, or stop it first."
        )


def read_holder(path: Path) -> dict[str, Any]:
    """What the lock file says about its holder (empty if unreadable)."""
    try:
        data = json.loads(path.read_text() or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class DataDirLock:
    """Exclusive lock on a data dir; use as a context manager or call acquire/release."""

    def __init__(self, data_dir: Path | str, *, command: str = "sync") -> None:
        self.path = Path(data_dir) / LOCK_FILENAME
        self.command = command
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise `LockHeldError` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                holder = read_holder(self.path)
                raise LockHeldError(self.path, holder) from None
            raise
        # We hold the flock: any previous content is from a dead holder (stale) and is replaced.
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": self.command,
            "since": utc_now(),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd

    def release(self) -> None:
        """Release the lock (the file stays, emptied, for the next holder)."""
        if self._fd is None:
            return
        try:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def is_locked(data_dir: Path | str) -> bool:
    """Whether another process holds the data-dir lock right now (non-blocking probe)."""
    path = Path(data_dir) / LOCK_FILENAME
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
