"""``python -m met_vision.snapshot SRC_DIR DST_DIR``: a consistent copy of a mirror's ``met.sqlite``.

For staging the data on a cluster (docs/training.md, the runbook): the copy is taken with
SQLite's backup API (`met_vision.data.readonly.snapshot_database`), so the harvester may keep
writing the source meanwhile, and it has no ``-wal``, so it opens read-only anywhere.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

from met_vision.data.readonly import snapshot_database

PROG = "met_vision.snapshot"


def main(argv: list[str] | None = None) -> int:
    """Snapshot ``SRC_DIR/met.sqlite`` to ``DST_DIR/met.sqlite``; 2 with one error line."""
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the harvester's data dir")
    parser.add_argument("target", type=Path, help="the staged data dir (created)")
    args = parser.parse_args(argv)
    try:
        if not (args.source / "met.sqlite").is_file():
            raise FileNotFoundError(f"no mirror database at {args.source / 'met.sqlite'}")
        args.target.mkdir(parents=True, exist_ok=True)
        out = snapshot_database(args.source / "met.sqlite", args.target / "met.sqlite")
    except (OSError, sqlite3.Error) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{out} ({out.stat().st_size / 1e6:.1f} MB), a snapshot of {args.source / 'met.sqlite'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
