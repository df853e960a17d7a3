"""Benchmark `import-csv`: rows/s and peak RSS for generated full-shape MetObjects.csv files.

Each size is generated first (not timed), then imported into a fresh data dir in its own
subprocess (so peak RSS is per size), then imported again (unchanged rows: the idempotent path).

    .venv/bin/python bench/csv_import.py                       # 20k, 100k, 300k rows
    .venv/bin/python bench/csv_import.py --sizes 20000 100000  # other sizes

Columns: rows/s is wall-clock; cpu main/writer is the CPU time of the parsing process and of the
SQLite writer process; rows/cpu-s divides the rows by both processes' whole user+sys CPU time
(what one idle core would do with no overlap: steadier than wall time on a shared machine); RSS
is the peak resident set (ru_maxrss) of the parsing process and of the writer process; the last
column compares rows/s with the smallest size.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "harvester"))  # csvgen, the seeded CSV generator


def child(path: str, data_dir: str, batch_size: int) -> None:
    """Import `path` once and print one JSON line of figures."""
    from met_harvester.csvimport import import_csv

    cpu0 = os.times()
    began = time.perf_counter()
    report = import_csv(path, data_dir, batch_size=batch_size)
    wall = time.perf_counter() - began
    cpu1 = os.times()
    cpu = sum(cpu1[:4]) - sum(cpu0[:4])  # user + sys of this process and the writer process
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    writer_rss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "rows": report.rows_read,
                "inserted": report.inserted,
                "unchanged": report.unchanged,
                "bad": report.bad_rows,
                "wall": wall,
                "cpu": cpu,
                "cpu_main": report.cpu_main,
                "cpu_writer": report.cpu_writer,
                "rss_mib": rss_kib / 1024,
                "writer_rss_mib": writer_rss_kib / 1024,
            }
        )
    )


def run_child(path: Path, data_dir: Path, batch_size: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path), str(data_dir), str(batch_size)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Generate, import, import again; print one table."""
    parser = argparse.ArgumentParser(description="import-csv benchmark")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000, 300_000])
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]))
        return

    from csvgen import write_met_csv

    results = []
    with tempfile.TemporaryDirectory(prefix="bench-csv-") as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"MetObjects-{size}.csv"
            write_met_csv(path, size, seed=args.seed)
            data_dir = Path(tmp) / f"data-{size}"
            first = run_child(path, data_dir, args.batch_size)
            again = run_child(path, data_dir, args.batch_size)
            assert first["inserted"] == size and again["unchanged"] == size, (first, again)
            results.append((size, path.stat().st_size, first, again))
            path.unlink()

    base_rate = results[0][2]["rows"] / results[0][2]["wall"]
    print(f"import-csv benchmark (batch {args.batch_size}, {os.cpu_count()} CPUs visible)")
    print(
        f"{'rows':>8} {'file MB':>8} {'import s':>9} {'rows/s':>8} {'cpu main/writer s':>18} "
        f"{'rows/cpu-s':>10} {'RSS MiB main/writer':>19} {'re-import rows/s':>17} {'vs first':>9}"
    )
    for size, nbytes, first, again in results:
        rate = first["rows"] / first["wall"]
        print(
            f"{size:>8,} {nbytes / 1e6:>8.1f} {first['wall']:>9.2f} {rate:>8,.0f} "
            f"{first['cpu_main']:>8.2f}/{first['cpu_writer']:<9.2f} "
            f"{first['rows'] / first['cpu']:>10,.0f} "
            f"{first['rss_mib']:>10.1f}/{first['writer_rss_mib']:<8.1f} "
            f"{again['rows'] / again['wall']:>17,.0f} {rate / base_rate:>8.2f}x"
        )


if __name__ == "__main__":
    main()
