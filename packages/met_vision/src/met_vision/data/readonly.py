"""Opening the harvester's SQLite mirror read-only, also from a read-only mount.

The harvester keeps ``met.sqlite`` in WAL mode. A WAL reader needs the ``-shm`` (and ``-wal``)
files next to the database: it creates them when they are missing, which a read-only mount (the
cluster templates bind the data dir ``:ro``) does not allow, so ``mode=ro`` fails there with
"unable to open database file". `connect_readonly` chooses per directory:

* the directory is writable: ``mode=ro``. SQLite's normal reader, safe while a harvester writes
  in the same directory (it sees one committed snapshot per transaction).
* not writable, and no ``-wal`` or an empty one (the last writer closed cleanly and everything
  is in the main file; an empty ``-wal`` and a ``-shm`` are what any ``mode=ro`` reader leaves
  behind): ``immutable=1``. SQLite reads the main file without locks and without the ``-shm``.
* not writable, with a non-empty ``-wal`` and its ``-shm``: ``mode=ro``. SQLite (>= 3.22) reads
  a WAL database read-only through the existing files and sees the latest commits. While such a
  connection is open, a writer of the same file through another mount gets "attempt to write a
  readonly database" (seen on a bind mount), so this is for a mirror whose writer has stopped.

``immutable=1`` is only right while nothing writes the file. The safe way to feed a cluster is a
staged copy that nobody writes (`snapshot_database`, ``python -m met_vision.snapshot``: a
consistent snapshot even while the harvester runs; see docs/training.md). When the file is the
live one, the connection checks on close that the file and its ``-wal`` are as they were when it
opened, and raises `MirrorChangedError` otherwise, so a harvester writing elsewhere cannot make a
read silently wrong, nor is it blocked: the reader retries or is pointed at a snapshot.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import quote


class MirrorChangedError(sqlite3.OperationalError):
    """The database changed while it was read without locks (``immutable=1``)."""


def _fingerprint(path: Path) -> tuple[Any, ...]:
    stat = path.stat()
    wal = Path(f"{path}-wal")
    return (
        stat.st_ino,
        stat.st_size,
        stat.st_mtime_ns,
        wal.stat().st_size if wal.exists() else None,
    )


class ReadOnlyConnection(sqlite3.Connection):
    """A connection that, opened ``immutable``, checks on close that the file did not change."""

    path: Path = Path()
    opened_as: tuple[Any, ...] | None = None

    def close(self) -> None:
        """Close; raise `MirrorChangedError` if an immutable database changed meanwhile."""
        super().close()
        opened_as, self.opened_as = self.opened_as, None
        if opened_as is not None and _fingerprint(self.path) != opened_as:
            raise MirrorChangedError(
                f"{self.path} changed while it was read from a read-only directory; read it "
                "again, or stage a snapshot that nothing writes (docs/training.md)"
            )


def readonly_mode(path: Path) -> str:
    """``"ro"`` or ``"immutable"``: how `connect_readonly` opens ``path`` (see module docstring)."""
    if os.access(path.parent, os.W_OK):
        return "ro"
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    if not wal.exists() or wal.stat().st_size == 0:
        return "immutable"
    if shm.exists():
        return "ro"
    raise sqlite3.OperationalError(
        f"{path} has a -wal file but no -shm in a directory this process cannot write: open the "
        "mirror once where it is writable (any met-harvester command), or stage a snapshot "
        "(python -m met_vision.snapshot; docs/training.md)"
    )


def connect_readonly(path: Path | str, busy_timeout_ms: int = 30000) -> sqlite3.Connection:
    """Open the SQLite file ``path`` so that nothing can change it, from any directory."""
    path = Path(path).resolve()
    mode = readonly_mode(path)
    query = "mode=ro" if mode == "ro" else "immutable=1"
    opened_as = _fingerprint(path) if mode == "immutable" else None
    conn = sqlite3.connect(f"file:{quote(str(path))}?{query}", uri=True, factory=ReadOnlyConnection)
    assert isinstance(conn, ReadOnlyConnection)
    conn.path, conn.opened_as = path, opened_as
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # fail here, not mid-read
    return conn


def snapshot_database(source: Path | str, target: Path | str) -> Path:
    """Copy the SQLite file ``source`` to ``target`` as one consistent snapshot.

    SQLite's backup API reads inside one read transaction, so a harvester may keep writing the
    source meanwhile. The copy is switched to the rollback journal (``journal_mode=DELETE``): a
    file nothing writes then opens read-only anywhere, with no ``-wal``/``-shm`` beside it.
    """
    target = Path(target)
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)
    src = connect_readonly(source)
    try:
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)
            dst.execute("PRAGMA journal_mode=DELETE")
        finally:
            dst.close()
    finally:
        src.close()
    os.replace(partial, target)
    return target
