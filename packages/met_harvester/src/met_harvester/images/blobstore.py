"""A content-addressed blob store: `<data-dir>/images/<2 hex>/<2 hex>/<sha256>`.

A blob is written once and never modified. A download streams into a temp file
`images/.incoming/.tmp-<pid>-<random>` (same file system), hashed as the bytes arrive; when it
is complete and valid, its size and hash are checked, it is fsynced, hard-linked to its final
name (atomic, and never replaces an existing blob, so identical bytes are stored once) and the
blob's folder is fsynced (and the parent of a folder made for it); then the temp name is
dropped. `commit_group` does this for several blobs at once, in that order for every blob, with
each distinct folder fsynced once per group. The final folder depends on the hash, which is
known only after the last byte, hence the one incoming folder instead of a temp file next to the
blob; a link (or rename) inside one file system is just as atomic. Readers never see a partial
blob: they only look at 64-hex names. Temp files of dead processes are removed by the next sync
and by `gc`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
INCOMING = ".incoming"
CORRUPT = ".corrupt"
TEMP_PREFIX = ".tmp-"
HASH_CHUNK = 1 << 20
_TEMP_TAG = secrets.token_hex(4)  # with the pid and a counter: unique temp names, no syscall
_temp_counter = itertools.count()
# Starts writeback without waiting (pages still dirty or under writeback stay cached); Linux.
_start_writeback = getattr(os, "posix_fadvise", None)


def fsync_dir(path: Path) -> None:
    """fsync a directory so that a new or removed name in it is durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def hash_file(path: Path) -> tuple[str, int]:
    """sha256 hex digest and size of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


@dataclass(frozen=True)
class PendingBlob:
    """A complete, validated temp file waiting to become blob `sha256`; `fd` is open on it and
    is closed by the commit."""

    temp: Path
    fd: int
    sha256: str
    size: int


def _seal(blob: PendingBlob) -> None:
    """Check a temp file's size, make it read-only and fsync its bytes."""
    st = os.fstat(blob.fd)
    if st.st_size != blob.size:
        raise ValueError(f"temp file has {st.st_size} bytes, expected {blob.size}")
    if st.st_mode & 0o222:
        os.fchmod(blob.fd, 0o444)  # blobs are never modified: read-only from the start
    os.fdatasync(blob.fd)  # the bytes (and size) on disk before the name appears


@dataclass(frozen=True)
class TempFile:
    """A temp file being written; `pid` is the writer's process id."""

    path: Path
    pid: int | None


class BlobStore:
    """The store under `root` (normally `<data-dir>/images`)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self.incoming = self.root / INCOMING
        self.corrupt_dir = self.root / CORRUPT
        self._incoming_ready = False
        self._folders: set[str] = set()  # blob folders ("abcd" for ab/cd) known to exist

    @classmethod
    def for_data_dir(cls, data_dir: Path | str) -> BlobStore:
        """The store of a data dir: `<data-dir>/images`."""
        return cls(Path(data_dir) / "images")

    # --- names ----------------------------------------------------------------------------
    def path_for(self, sha256: str) -> Path:
        """Where the blob with this hash lives. Raises ValueError for anything but 64 hex."""
        if not SHA256_RE.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256[:80]!r}")
        return self.root / sha256[:2] / sha256[2:4] / sha256

    def has(self, sha256: str, size: int | None = None) -> bool:
        """Whether the blob exists (and has `size` bytes, when given)."""
        try:
            st = self.path_for(sha256).stat()
        except (OSError, ValueError):
            return False
        return size is None or st.st_size == size

    # --- writing --------------------------------------------------------------------------
    def new_temp(self) -> Path:
        """A fresh temp file name in the incoming folder (created by the caller)."""
        if not self._incoming_ready:
            self.incoming.mkdir(parents=True, exist_ok=True)
            self._incoming_ready = True
        return self.incoming / f"{TEMP_PREFIX}{os.getpid()}-{_TEMP_TAG}-{next(_temp_counter)}"

    def commit(self, temp: Path, sha256: str, size: int) -> bool:
        """Make a complete temp file the blob `sha256`; the temp name is gone afterwards.

        A group of one (see `commit_group`). Returns True if a new blob was stored, False if an
        identical one was already there (dedupe).

        Raises:
            ValueError: if the temp file's size is not `size`.
            OSError: if it could not be made durable.
        """
        try:
            fd = os.open(temp, os.O_RDONLY)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                temp.unlink()
            raise
        (result,) = self.commit_group([PendingBlob(temp, fd, sha256, size)])
        if isinstance(result, Exception):
            raise result
        return result

    def commit_group(self, blobs: Sequence[PendingBlob]) -> list[bool | Exception]:
        """Commit complete temp files as blobs, durably, sharing the fsyncs of one group.

        For every blob, in this order: its size is checked and its bytes are fsynced; its final
        name is linked (never replacing an existing blob; an existing one of the wrong size is
        corrupt and moved aside to `.corrupt/`); its folder is fsynced (each distinct folder
        once per group, and the parent of a folder created here too). Writeback of the whole
        group is started first, so the fsyncs wait for the disk together, not one after another.
        Every temp name is removed and every fd closed afterwards, whatever happened.

        Returns:
            Per blob: True (new blob stored), False (identical blob already there), or the
            exception that kept it out (ValueError for a wrong size, OSError).
        """
        results: list[bool | Exception] = [False] * len(blobs)
        try:
            if _start_writeback is not None:
                for blob in blobs:
                    with contextlib.suppress(OSError):  # only a hint; fdatasync below is the proof
                        _start_writeback(blob.fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for i, blob in enumerate(blobs):
                try:
                    _seal(blob)
                except (OSError, ValueError) as exc:
                    results[i] = exc
            created: list[Path] = []  # folders made here: their own names need an fsync too
            to_sync: dict[Path, list[int]] = {}  # folder -> blobs newly linked into it
            for i, blob in enumerate(blobs):
                if isinstance(results[i], Exception):
                    continue
                try:
                    final = self.path_for(blob.sha256)
                    if self._link_once(blob.temp, final, blob.size, created):
                        results[i] = True
                        to_sync.setdefault(final.parent, []).append(i)
                except (OSError, ValueError) as exc:
                    results[i] = exc
            for folder in reversed(created):  # a new folder's name lives in its parent
                to_sync.setdefault(folder.parent, []).extend(to_sync.get(folder, []))
            for folder, members in to_sync.items():
                try:
                    fsync_dir(folder)
                except OSError as exc:
                    for i in members:
                        results[i] = exc
        finally:
            for blob in blobs:
                with contextlib.suppress(OSError):
                    os.close(blob.fd)
                with contextlib.suppress(FileNotFoundError):
                    blob.temp.unlink()
        return results

    def _link_once(self, temp: Path, final: Path, size: int, created: list[Path]) -> bool:
        if final.name[:4] not in self._folders:  # not known to exist: make it first
            self._make_folder(final.parent, created)
        for _ in range(3):
            try:
                os.link(temp, final)
                return True
            except FileNotFoundError:
                if not temp.exists():
                    raise
                self._make_folder(final.parent, created)  # first blob of this folder
                continue
            except FileExistsError:
                try:
                    if final.stat().st_size == size:
                        return False
                except FileNotFoundError:
                    continue
                self.move_aside(final.name)
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                    raise
                # No hard links here (some network file systems): rename, checking first.
                if final.exists():
                    return False
                os.rename(temp, final)
                return True
        raise OSError(f"could not store blob {final.name}: it keeps changing")

    def _make_folder(self, folder: Path, created: list[Path]) -> None:
        """Create a blob folder (and its top folder), noting each one this call created."""
        for path in (folder.parent, folder):
            try:
                path.mkdir()
                created.append(path)
            except FileExistsError:
                pass
        self._folders.add(folder.parent.name + folder.name)

    def move_aside(self, sha256: str) -> Path | None:
        """Move a (corrupt) blob out of the store into `.corrupt/`; returns its new path."""
        src = self.path_for(sha256)
        self.corrupt_dir.mkdir(parents=True, exist_ok=True)
        dst = self.corrupt_dir / f"{sha256}.{int(time.time())}.{secrets.token_hex(4)}"
        try:
            os.rename(src, dst)
        except FileNotFoundError:
            return None
        fsync_dir(src.parent)
        return dst

    # --- reading and listing ------------------------------------------------------------------
    def iter_blobs(self, prefix: str | None = None) -> Iterator[tuple[str, Path]]:
        """Every blob `(sha256, path)`, optionally only those in top folder `prefix` (2 hex).

        Only 64-hex names in the right folders count; temp files and strays are skipped.
        """
        tops = [prefix] if prefix else [f"{i:02x}" for i in range(256)]
        for top in tops:
            top_dir = self.root / top
            if not top_dir.is_dir():
                continue
            for sub in sorted(os.scandir(top_dir), key=lambda e: e.name):
                if not sub.is_dir(follow_symlinks=False) or len(sub.name) != 2:
                    continue
                for entry in os.scandir(sub.path):
                    name = entry.name
                    if (
                        SHA256_RE.match(name)
                        and name[:2] == top
                        and name[2:4] == sub.name
                        and entry.is_file(follow_symlinks=False)
                    ):
                        yield name, Path(entry.path)

    def iter_temp_files(self) -> Iterator[TempFile]:
        """Temp files left in the incoming folder (and stray `.tmp-*` anywhere in the store)."""
        if self.incoming.is_dir():
            for entry in os.scandir(self.incoming):
                if entry.name.startswith(TEMP_PREFIX):
                    yield TempFile(Path(entry.path), _temp_pid(entry.name))

    def iter_corrupt(self) -> Iterator[Path]:
        """Blobs moved aside as corrupt by `verify --repair`."""
        if self.corrupt_dir.is_dir():
            for entry in os.scandir(self.corrupt_dir):
                yield Path(entry.path)

    def stale_temp_files(self, *, max_idle: float = 6 * 3600.0) -> list[TempFile]:
        """Temp files whose writer process is gone, or untouched for `max_idle` seconds (a live
        download writes at least every `--timeout` seconds; this also covers reused pids)."""
        now = time.time()
        stale: list[TempFile] = []
        for temp in self.iter_temp_files():
            try:
                idle = now - temp.path.stat().st_mtime
            except FileNotFoundError:
                continue
            if temp.pid is None or not _pid_alive(temp.pid) or idle > max_idle:
                stale.append(temp)
        return stale

    def remove_stale_temp_files(self) -> int:
        """Delete temp files of dead writers; returns how many were removed."""
        removed = 0
        for temp in self.stale_temp_files():
            with contextlib.suppress(FileNotFoundError):
                temp.path.unlink()
                removed += 1
        return removed


def _temp_pid(name: str) -> int | None:
    parts = name[len(TEMP_PREFIX) :].split("-", 1)
    try:
        return int(parts[0])
    except ValueError:
        return None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
