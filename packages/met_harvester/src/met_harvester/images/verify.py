"""`verify`: prove the mirror's integrity, and with `--repair` re-queue what is affected.

Checks, one top folder (`images/<2 hex>/`) at a time so memory stays bounded:

- SQLite `PRAGMA integrity_check`;
- *missing* blobs: referenced by an `ok` row but absent;
- *corrupt* blobs: size differs from the rows' `bytes` (all blobs), or the bytes do not hash to
  the name (every blob, or a random `--sample` share of them);
- *orphaned* blobs: on disk but referenced by no row (`gc --apply` removes them);
- rows that point nowhere: `ok` rows without a valid sha256.

`--repair` moves corrupt blobs aside to `images/.corrupt/` and sets the current rows that used a
missing or corrupt blob back to `pending`, so the next sync fetches them again (history rows,
whose URL is no longer wanted, become `failed`).
"""

from __future__ import annotations

import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from met_harvester.db.connection import connect_sync
from met_harvester.images.blobstore import SHA256_RE, BlobStore, hash_file

_REFS_SQL = (
    "SELECT sha256, MAX(status = 'ok'), MAX(bytes) FROM images "
    "WHERE sha256 >= ? AND sha256 < ? GROUP BY sha256"
)


def parse_sample(text: str) -> float:
    """`5%` or `0.05` as a fraction in (0, 1]. Raises ValueError otherwise."""
    value = text.strip()
    try:
        fraction = float(value[:-1]) / 100 if value.endswith("%") else float(value)
    except ValueError:
        raise ValueError(f"--sample {text!r}: give a share such as 5% or 0.05") from None
    if not 0 < fraction <= 1:
        raise ValueError(f"--sample {text!r}: must be more than 0% and at most 100%")
    return fraction


@dataclass
class VerifyReport:
    """What `verify` found (and repaired)."""

    integrity: list[str] = field(default_factory=list)
    blobs: int = 0
    referenced: int = 0
    rehashed: int = 0
    sample: float | None = None
    missing: list[str] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    dangling_rows: list[int] = field(default_factory=list)
    temp_files: int = 0
    requeued: int = 0
    history_failed: int = 0
    moved_aside: int = 0
    repaired: bool = False

    @property
    def problems(self) -> int:
        """How many problems were found (0: clean)."""
        return (
            len(self.integrity)
            + len(self.missing)
            + len(self.corrupt)
            + len(self.orphaned)
            + len(self.dangling_rows)
        )

    def summary(self) -> list[str]:
        """Human summary lines."""
        how = "all" if self.sample is None else f"a {self.sample:.0%} sample"
        lines = [
            f"sqlite integrity_check: {'ok' if not self.integrity else '; '.join(self.integrity[:5])}",
            f"blobs on disk: {self.blobs}; referenced by ok rows: {self.referenced}; "
            f"re-hashed: {self.rehashed} ({how})",
            f"missing blobs: {len(self.missing)}",
            f"corrupt blobs: {len(self.corrupt)}",
            f"orphaned blobs: {len(self.orphaned)}"
            + (" (remove with `met-harvester gc --apply`)" if self.orphaned else ""),
            f"rows pointing nowhere: {len(self.dangling_rows)}",
            f"temp files of interrupted downloads: {self.temp_files}",
        ]
        for sha in self.missing[:10]:
            lines.append(f"  missing {sha}")
        for sha in self.corrupt[:10]:
            lines.append(f"  corrupt {sha}")
        for sha in self.orphaned[:10]:
            lines.append(f"  orphaned {sha}")
        if self.repaired:
            lines.append(
                f"repaired: {self.moved_aside} corrupt blobs moved aside, {self.requeued} rows "
                f"re-queued for the next sync, {self.history_failed} history rows marked failed"
            )
        elif self.missing or self.corrupt or self.dangling_rows:
            lines.append("run `met-harvester verify --repair`, then `met-harvester sync`")
        lines.append("clean" if not self.problems else f"problems found: {self.problems}")
        return lines


def verify_store(
    data_dir: Path | str,
    *,
    sample: float | None = None,
    repair: bool = False,
    rng: random.Random | None = None,
) -> VerifyReport:
    """Check the blob store against the `images` table (see the module doc).

    Args:
        data_dir: the mirror's data dir.
        sample: re-hash only this share of the referenced blobs (None: all of them).
        repair: move corrupt blobs aside and re-queue the affected rows.
        rng: random source of the sample.
    """
    store = BlobStore.for_data_dir(data_dir)
    report = VerifyReport(sample=sample)
    rng = rng or random.Random()
    conn = connect_sync(data_dir)
    try:
        report.integrity = [
            str(r[0]) for r in conn.execute("PRAGMA integrity_check") if str(r[0]) != "ok"
        ]
        for top in range(256):
            _verify_prefix(conn, store, f"{top:02x}", report, sample, rng)
        report.dangling_rows = [
            int(r[0])
            for r in conn.execute(
                "SELECT image_id FROM images WHERE status = 'ok' AND "
                "(sha256 IS NULL OR length(sha256) != 64 OR sha256 GLOB '*[^0-9a-f]*')"
            )
        ]
        report.temp_files = sum(1 for _ in store.iter_temp_files())
        if repair:
            _repair(conn, store, report)
    finally:
        conn.close()
    return report


def _verify_prefix(
    conn: sqlite3.Connection,
    store: BlobStore,
    top: str,
    report: VerifyReport,
    sample: float | None,
    rng: random.Random,
) -> None:
    upper = f"{int(top, 16) + 1:02x}" if top != "ff" else "g"
    refs = {
        str(sha): (bool(ok), size)
        for sha, ok, size in conn.execute(_REFS_SQL, (top, upper))
        if sha and SHA256_RE.match(str(sha))
    }
    on_disk = dict(store.iter_blobs(top))
    report.blobs += len(on_disk)
    for sha, (ok, size) in sorted(refs.items()):
        if not ok:
            continue
        report.referenced += 1
        path = on_disk.get(sha)
        if path is None:
            report.missing.append(sha)
            continue
        try:
            actual_size = path.stat().st_size
        except FileNotFoundError:
            report.missing.append(sha)
            continue
        if size is not None and actual_size != size:
            report.corrupt.append(sha)
            continue
        if sample is None or rng.random() < sample:
            report.rehashed += 1
            if hash_file(path)[0] != sha:
                report.corrupt.append(sha)
    report.orphaned.extend(sorted(sha for sha in on_disk if sha not in refs))


def _repair(conn: sqlite3.Connection, store: BlobStore, report: VerifyReport) -> None:
    report.repaired = True
    for sha in report.corrupt:
        if store.move_aside(sha) is not None:
            report.moved_aside += 1
    affected = report.corrupt + report.missing
    with conn:
        for start in range(0, len(affected), 500):
            chunk = affected[start : start + 500]
            marks = ",".join("?" * len(chunk))
            report.requeued += conn.execute(
                "UPDATE images SET status = 'pending', error = 'requeued by verify: blob missing "
                "or corrupt', attempts = 0, next_retry_at = NULL "
                f"WHERE status = 'ok' AND is_current = 1 AND sha256 IN ({marks})",
                chunk,
            ).rowcount
            report.history_failed += conn.execute(
                "UPDATE images SET status = 'failed', error = 'blob missing or corrupt (verify); "
                f"history row, not fetched again' WHERE status = 'ok' AND is_current = 0 "
                f"AND sha256 IN ({marks})",
                chunk,
            ).rowcount
        for start in range(0, len(report.dangling_rows), 500):
            ids = report.dangling_rows[start : start + 500]
            marks = ",".join("?" * len(ids))
            report.requeued += conn.execute(
                "UPDATE images SET status = CASE WHEN is_current = 1 THEN 'pending' "
                "ELSE 'failed' END, error = 'requeued by verify: row pointed nowhere', "
                f"attempts = 0, next_retry_at = NULL WHERE image_id IN ({marks})",
                ids,
            ).rowcount
