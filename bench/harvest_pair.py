"""Paired rounds of `bench/harvest.py`'s unthrottled case: harvester source trees side by side,
and the Scrapy spider, in rotating order, each harvest in its own process against its own fake
API process. Prints one table (each round, then medians and ratios to the first tree):

    .venv/bin/python bench/harvest_pair.py --objects 5000 --rounds 5 \\
        before=/tmp/before/packages/met_harvester/src after=packages/met_harvester/src

A tree is `name=path` (the `met_harvester` package's parent folder, put first on the child's
PYTHONPATH); with Scrapy installed (`pip install scrapy`) a Scrapy row joins every round
(`--no-scrapy` leaves it out). Load on a shared machine moves every figure: only figures of
the same run compare.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harvest


def one_run(who: str, tree: str | None, objects: int, concurrency: int) -> dict[str, Any]:
    """One unthrottled harvest (a tree) or crawl (Scrapy); its figures per record."""
    if tree is None:
        figures = harvest.run_case(objects, None, concurrency, 0.0, who="scrapy")
    else:
        os.environ["PYTHONPATH"] = str(Path(tree).resolve())
        figures = harvest.run_case(objects, harvest.UNTHROTTLED, concurrency, 0.0)
    n = figures["objects"]
    return {
        "who": who,
        "objects": n,
        "per_s": n / figures["wall_s"],
        "cpu_ms": 1000 * figures["cpu_s"] / n,
        "rss": figures["peak_rss_mb"],
        "server_ms": 1000 * figures["server_cpu_s"] / max(1, figures["requests"]),
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("trees", nargs="+", help="name=path of a met_harvester source tree")
    parser.add_argument("--objects", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--no-scrapy", action="store_true")
    args = parser.parse_args()
    trees: dict[str, str | None] = dict(t.split("=", 1) for t in args.trees)
    if not args.no_scrapy and find_spec("scrapy") is not None:
        trees["Scrapy"] = None
    names = list(trees)
    print(f"# bench/harvest_pair.py  {args.objects:,} objects, c={args.concurrency}, unthrottled")
    print(
        f"{'round':>5} {'who':<10} {'objects':>8} {'obj/s':>7} {'CPU ms/rec':>10} "
        f"{'RSS MB':>6} {'load':>5}"
    )
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]  # rotate: no fixed slot
        for name in order:
            run = one_run(name, trees[name], args.objects, args.concurrency)
            runs[name].append(run)
            print(
                f"{r + 1:>5} {name:<10} {run['objects']:>8,} {run['per_s']:>7.0f} "
                f"{run['cpu_ms']:>10.3f} {run['rss']:>6.0f} {run['server_ms']:>17.3f} {run['load']:>5.1f}",
                flush=True,
            )
    first = names[0]
    base_cpu = statistics.median(x["cpu_ms"] for x in runs[first])
    print(
        f"{'median':>5} {'who':<10} {'obj/s':>7} {'CPU ms/rec':>10} {'min':>7} {'max':>7} "
        f"{'CPU / ' + first:>12}"
    )
    for name in names:
        cpu = [x["cpu_ms"] for x in runs[name]]
        per_s = statistics.median(x["per_s"] for x in runs[name])
        print(
            f"{'':>5} {name:<10} {per_s:>7.0f} {statistics.median(cpu):>10.3f} {min(cpu):>7.3f} "
            f"{max(cpu):>7.3f} {statistics.median(cpu) / base_cpu:>11.2f}x"
        )
    if "Scrapy" in runs:
        for name in names[:-1]:
            ratios = [
                mine["per_s"] / theirs["per_s"]
                for mine, theirs in zip(runs[name], runs["Scrapy"], strict=True)
            ]
            print(
                f"{name} / Scrapy objects/s, per round: "
                + ", ".join(f"{x:.2f}x" for x in ratios)
                + f"; median {statistics.median(ratios):.2f}x, lowest {min(ratios):.2f}x"
            )


if __name__ == "__main__":
    main()
