"""`gc`: remove blobs no row references, temp files of dead downloads and blobs that `verify
--repair` moved aside. A dry run by default: it prints what it would remove.

A blob counts as referenced by any row of `images` (current or history, any status), so the
history of changed images keeps its blobs. Unreferenced blobs younger than `min_age` seconds are
kept: a sync may have stored one a moment ago and not yet committed its row.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path

from met_harvester.db.connection import connect_sync
from met_harvester.images.blobstore import BlobStore

DEFAULT_MIN_AGE = 600.0


@dataclass
class GcReport:
    """What `gc` found and (with `apply`) removed."""

    applied: bool
    unreferenced: list[tuple[Path, int]] = field(default_factory=list)
    temp_files: list[tuple[Path, int]] = field(default_factory=list)
    set_aside: list[tuple[Path, int]] = field(default_factory=list)
    too_recent: int = 0
    removed: int = 0
    freed_bytes: int = 0

    @property
    def candidates(self) -> list[tuple[Path, int]]:
        """Every file gc removes (or would remove)."""
        return self.unreferenced + self.temp_files + self.set_aside

    def summary(self) -> list[str]:
        """Human summary lines, one per file, then totals."""
        verb = "removed" if self.applied else "would remove"
        lines = [f"{verb} {path} ({size} bytes)" for path, size in self.candidates]
        total = sum(size for _p, size in self.candidates)
        lines.append(
            f"{verb}: {len(self.unreferenced)} unreferenced blobs, {len(self.temp_files)} "
            f"stale temp files, {len(self.set_aside)} corrupt blobs set aside; {total} bytes"
        )
        if self.too_recent:
            lines.append(f"kept {self.too_recent} unreferenced blobs younger than --min-age")
        if not self.applied and self.candidates:
            lines.append("dry run: nothing removed; run `met-harvester gc --apply` to remove")
        return lines


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def collect_garbage(
    data_dir: Path | str, *, apply: bool = False, min_age: float = DEFAULT_MIN_AGE
) -> GcReport:
    """Find (and with `apply`, remove) what the store no longer needs.

    Args:
        data_dir: the mirror's data dir.
        apply: remove the files; otherwise only report them.
        min_age: keep unreferenced blobs modified less than this many seconds ago.
    """
    store = BlobStore.for_data_dir(data_dir)
    report = GcReport(applied=apply)
    now = time.time()
    conn = connect_sync(data_dir)
    try:
        for top in range(256):
            prefix = f"{top:02x}"
            upper = f"{top + 1:02x}" if top != 255 else "g"
            refs = {
                str(r[0])
                for r in conn.execute(
                    "SELECT DISTINCT sha256 FROM images WHERE sha256 >= ? AND sha256 < ?",
                    (prefix, upper),
                )
            }
            for sha, path in store.iter_blobs(prefix):
                if sha in refs:
                    continue
                try:
                    st = path.stat()
                except FileNotFoundError:
                    continue
                if now - st.st_mtime < min_age:
                    report.too_recent += 1
                else:
                    report.unreferenced.append((path, st.st_size))
    finally:
        conn.close()
    report.temp_files = [(t.path, _size(t.path)) for t in store.stale_temp_files()]
    report.set_aside = [(p, _size(p)) for p in store.iter_corrupt()]
    if apply:
        for path, size in report.candidates:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                report.removed += 1
                report.freed_bytes += size
    return report
