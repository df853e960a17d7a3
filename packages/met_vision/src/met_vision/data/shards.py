"""WebDataset tar shards: a prepared dataset as a few hundred large files.

Layout of `<data-dir>/cache/<size>/datasets/<key>/shards/`:

- `<split>-<NNNNNN>.tar`: plain POSIX (ustar) tar files in the WebDataset layout: each sample is
  two consecutive members with the same key (the object id), `<key>.jpg` (the resized JPEG, the
  same bytes the per-file cache holds) and `<key>.json` (object_id, sha256, target, split and the
  label names). `webdataset.WebDataset(urls)` or `tar tf` read them as they are.
- `index.parquet`: the dataset in index order (the order of the per-file index):
  object_id, sha256, target, split and where the JPEG lies: shard, offset, size.
- `labels.json`: the label manifest; `shards.json`: format, shard list, samples and bytes.

Readers use the index for random access (`os.pread` on a descriptor kept open per shard and
process), so a worker opens each shard once instead of one file per sample.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import re
import shutil
import tarfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

SHARD_FORMAT = "webdataset-tar"
SHARDS_DIR = "shards"
INDEX_FILE = "index.parquet"
MANIFEST_FILE = "shards.json"
LOCATION_COLUMNS = ("shard", "offset", "size")
DEFAULT_SHARD_BYTES = 128 * 1024 * 1024
_BLOCK = tarfile.BLOCKSIZE
_ADDRESS = re.compile(r"^(?P<shard>.+\.tar)#(?P<offset>\d+):(?P<size>\d+)$")


@dataclass(frozen=True)
class Location:
    """Where a sample's JPEG lies: shard file name, byte offset and length."""

    shard: str
    offset: int
    size: int


def member_address(shard_path: Path | str, offset: int, size: int) -> str:
    """A sample's JPEG as one string, `<shard path>#<offset>:<size>` (the DataModule's `path`
    column for shards; `met_vision.prepare.open_rgb` reads it)."""
    return f"{shard_path}#{offset}:{size}"


def read_member(address: str) -> io.BytesIO | None:
    """The bytes a `member_address` names, or None when `address` is not one."""
    match = _ADDRESS.match(address)
    if match is None or os.path.exists(address):
        return None
    with open(match["shard"], "rb") as handle:
        handle.seek(int(match["offset"]))
        data = handle.read(int(match["size"]))
    if len(data) != int(match["size"]):
        raise OSError(f"{match['shard']}: short read at offset {match['offset']}")
    return io.BytesIO(data)


def shard_name(split: str, number: int) -> str:
    """File name of shard `number` of `split`."""
    return f"{split}-{number:06d}.tar"


def _member(name: str, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, 0, 0o444  # deterministic bytes
    return info


class ShardWriter:
    """Appends samples of one split to numbered tar shards, starting a new shard at `max_bytes`.

    Each shard is written to a temporary name and renamed into place when it is complete, so a
    reader never sees a partial shard.
    """

    def __init__(self, directory: Path, split: str, first_number: int, max_bytes: int) -> None:
        self.directory = directory
        self.split = split
        self.number = first_number
        self.max_bytes = max_bytes
        self.written: dict[str, dict[str, Any]] = {}
        self._tar: tarfile.TarFile | None = None
        self._name = ""
        self._samples = 0

    def _open(self) -> tarfile.TarFile:
        self._name = shard_name(self.split, self.number)
        self.number += 1
        self._samples = 0
        tmp = self.directory / f".{self._name}.{os.getpid()}.tmp"
        self._tar = tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115 (closed in _finish)
        return self._tar

    def add(self, key: str, jpeg: bytes, meta: dict[str, Any]) -> Location:
        """Write one sample (`<key>.jpg`, `<key>.json`); returns where its JPEG lies."""
        tar = self._tar if self._tar is not None else self._open()
        tar.addfile(_member(f"{key}.jpg", len(jpeg)), io.BytesIO(jpeg))
        padded = -(-len(jpeg) // _BLOCK) * _BLOCK  # the data ends the member, block-padded
        location = Location(self._name, tar.offset - padded, len(jpeg))
        payload = json.dumps(meta, sort_keys=True).encode()
        tar.addfile(_member(f"{key}.json", len(payload)), io.BytesIO(payload))
        self._samples += 1
        if tar.offset >= self.max_bytes:
            self._finish()
        return location

    def _finish(self) -> None:
        if self._tar is None:
            return
        tmp = Path(self._tar.name)  # type: ignore[arg-type]
        self._tar.close()
        self._tar = None
        final = self.directory / self._name
        os.replace(tmp, final)
        self.written[self._name] = {
            "split": self.split,
            "samples": self._samples,
            "bytes": final.stat().st_size,
        }

    def close(self) -> dict[str, dict[str, Any]]:
        """Finish the open shard; returns {shard name: {split, samples, bytes}} of all written."""
        self._finish()
        return self.written


def scan_shard(path: Path | str) -> list[tuple[str, int, int]]:
    """(member name, data offset, size) of every member, read with the standard tar reader."""
    with tarfile.open(path, "r:") as tar:
        return [(m.name, m.offset_data, m.size) for m in tar.getmembers()]


class ShardReader:
    """Reads byte ranges of the shards under `root`, one descriptor kept open per shard.

    At most `max_open` descriptors stay open (least recently used closed first). Descriptors are
    per process: after a fork (DataLoader workers) each worker opens its own.
    """

    def __init__(self, root: Path | str, max_open: int = 64) -> None:
        self.root = Path(root)
        self.max_open = max_open
        self._fds: OrderedDict[str, int] = OrderedDict()
        self._pid = os.getpid()
        self.opened = 0

    def _fd(self, shard: str) -> int:
        if self._pid != os.getpid():  # inherited from the parent: not ours to use or close
            self._fds, self._pid = OrderedDict(), os.getpid()
        fd = self._fds.get(shard)
        if fd is None:
            fd = os.open(self.root / shard, os.O_RDONLY)
            self.opened += 1
            self._fds[shard] = fd
            if len(self._fds) > self.max_open:
                os.close(self._fds.popitem(last=False)[1])
        else:
            self._fds.move_to_end(shard)
        return fd

    def read(self, shard: str, offset: int, size: int) -> bytes:
        """The `size` bytes at `offset` of `shard`.

        Raises:
            OSError: the shard is missing or shorter than the index says.
        """
        data = os.pread(self._fd(shard), size, offset)
        if len(data) != size:
            raise OSError(f"{self.root / shard}: {len(data)} of {size} bytes at offset {offset}")
        return data

    def close(self) -> None:
        """Close this process's descriptors."""
        if self._pid == os.getpid():
            for fd in self._fds.values():
                os.close(fd)
        self._fds.clear()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_fds"] = OrderedDict()
        return state

    def __del__(self) -> None:
        with contextlib.suppress(OSError):
            self.close()


def read_index(shard_dir: Path) -> pd.DataFrame:
    """The shard index of a shard directory (object_id, sha256, target, split, shard, offset,
    size), in dataset order."""
    return pd.read_parquet(shard_dir / INDEX_FILE)


def stage_shards(shard_dir: Path, dest: Path) -> Path:
    """Copy a shard directory to node-local disk (`dest`); files already there with the same
    size and mtime are kept. Safe to run from several processes at once (per-process temporary
    names, atomic renames; the index is copied last). Returns `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in shard_dir.iterdir() if not p.name.startswith("."))
    names.sort(key=lambda name: name == INDEX_FILE)  # the index last: it names the rest
    with open(dest / ".stage.lock", "w") as lock:  # ranks of one node copy once
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name in names:
            _copy_if_changed(shard_dir / name, dest / name)
        for stale in set(p.name for p in dest.glob("*.tar")) - set(names):
            (dest / stale).unlink()
    return dest


def _copy_if_changed(source: Path, target: Path) -> None:
    stat = source.stat()
    if target.exists():
        have = target.stat()
        if have.st_size == stat.st_size and int(have.st_mtime) == int(stat.st_mtime):
            return
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.copy2(source, tmp)
    os.replace(tmp, target)
