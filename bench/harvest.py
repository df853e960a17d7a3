"""Harvest benchmark: the real `sync` path (client, limiter, DB writes) against the fake Met API.

The fake API runs in its own process, and each harvest runs in its own process too, so the CPU
seconds and peak RSS are the harvester's alone and per run. Prints one table:

    .venv/bin/python bench/harvest.py                       # 10k and 100k unthrottled, --rate 80
    .venv/bin/python bench/harvest.py --sizes 2000 --rate-objects 400   # quick look

Rows: objects/s unthrottled (high --rate), harvester CPU seconds per 1,000 objects, peak RSS, and
the rate achieved at `--rate 80` with 200 ms of server latency, measured at the server.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

HERE = Path(__file__).resolve()


# ---------------------------------------------------------------------------- child: fake API
def serve(n_objects: int, latency: float) -> None:
    """Run the fake API on 127.0.0.1:0, print its URL, serve until killed."""
    from aiohttp import web

    from met_harvester.testing import CollectionConfig, FakeMetAPI, FaultConfig, SyntheticCollection

    arrivals: list[tuple[float, str]] = []  # (time the request arrived, path)

    @web.middleware
    async def note_arrival(request: web.Request, handler: Any) -> web.StreamResponse:
        arrivals.append((time.time(), request.path))
        return await handler(request)

    async def arrivals_json(request: web.Request) -> web.Response:
        return web.json_response({"arrivals": arrivals})

    async def main() -> None:
        collection = SyntheticCollection(CollectionConfig(n_objects=n_objects, seed=0))
        api = FakeMetAPI(collection, faults=FaultConfig(latency=latency))
        # the fake API logs a request when it has answered (after the latency); the rate the
        # server sees is measured on arrival, before any handler runs
        api.app.middlewares.insert(0, note_arrival)
        api.app.router.add_get("/_bench/arrivals", arrivals_json)
        await api.start("127.0.0.1", 0)
        print(api.api_url, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------------------- child: harvester
def harvest(api_url: str, rate: float, concurrency: int, data_dir: str) -> None:
    """One full `sync` (no images) into a fresh data dir; print a JSON line of measurements."""
    from met_harvester.ratelimit import AdaptiveRateLimiter
    from met_harvester.settings import HarvesterSettings
    from met_harvester.sync import run_sync

    options: dict[str, Any] = {
        "data_dir": Path(data_dir),
        "api_url": api_url,
        "rate": rate,
        "concurrency": concurrency,
        "images": False,
        "timeout": 60.0,
    }
    settings = HarvesterSettings(**options)
    starts: list[float] = []  # when the limiter let each request go (the client's view)
    acquire = AdaptiveRateLimiter.acquire

    async def timed_acquire(self: AdaptiveRateLimiter) -> None:
        await acquire(self)
        starts.append(time.monotonic())

    AdaptiveRateLimiter.acquire = timed_acquire  # type: ignore[method-assign]
    start_cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    if os.environ.get("BENCH_HARVEST_PATH") == "client":  # the client alone, no DB
        fetched = asyncio.run(_client_only(settings))
        how = "client"
    else:
        report = asyncio.run(run_sync(settings))
        fetched = int(report.counts.get("fetched", report.counts.get("to_fetch", 0)))
        how = "run_sync"
    wall = time.perf_counter() - start
    end_cpu = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (end_cpu.ru_utime - start_cpu.ru_utime) + (end_cpu.ru_stime - start_cpu.ru_stime)
    print(
        json.dumps(
            {
                "path": how,
                "objects": fetched,
                "wall_s": wall,
                "cpu_s": cpu,
                "peak_rss_mb": end_cpu.ru_maxrss / 1024,
                "client_max_1s": max_per_window(starts),
            }
        ),
        flush=True,
    )


async def _client_only(settings: Any) -> int:
    from met_harvester.client import MetClient

    async with MetClient(settings) as client:
        ids = await client.list_object_ids()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for object_id in ids:
            queue.put_nowait(object_id)
        done = 0

        async def worker() -> None:
            nonlocal done
            while not queue.empty():
                result = await client.get_object(queue.get_nowait())
                done += result.kind == "ok"

        await asyncio.gather(*(worker() for _ in range(settings.concurrency)))
        return done


# ---------------------------------------------------------------------------- parent
def run_case(n_objects: int, rate: float, concurrency: int, latency: float) -> dict[str, Any]:
    """Start a fake API process, harvest it in another process, collect both sides' figures."""
    server = subprocess.Popen(
        [sys.executable, str(HERE), "--serve", str(n_objects), "--latency", str(latency)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        api_url = server.stdout.readline().strip()
        if not api_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"fake API did not start (got {api_url!r})")
        server_proc = psutil.Process(server.pid)
        server_cpu0 = sum(server_proc.cpu_times()[:2])
        with tempfile.TemporaryDirectory(prefix="bench-harvest-") as data_dir:
            out = subprocess.run(
                [
                    sys.executable,
                    str(HERE),
                    "--harvest",
                    api_url,
                    "--rate",
                    str(rate),
                    "--concurrency",
                    str(concurrency),
                    "--data-dir",
                    data_dir,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
        if out.returncode != 0:
            raise RuntimeError(f"harvest failed: {out.stderr.strip().splitlines()[-1:]}")
        figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        figures["server_cpu_s"] = sum(server_proc.cpu_times()[:2]) - server_cpu0
        base = api_url.split("/public/")[0]
        with urllib.request.urlopen(f"{base}/_bench/arrivals", timeout=60) as resp:
            log = json.load(resp)["arrivals"]
        api = [(t, path) for t, path in log if path.startswith("/public/collection/v1/")]
        records = sorted(t for t, path in api if path.startswith("/public/collection/v1/objects/"))
        figures.update(server_side(sorted(t for t, _ in api), records))
        return figures
    finally:
        server.terminate()
        server.wait(timeout=30)


def max_per_window(times: list[float], width: float = 1.0) -> int:
    """Most of `times` (sorted) in any window [t, t + width)."""
    best, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + width:
            j += 1
        best = max(best, j - i)
    return best


def server_side(times: list[float], records: list[float]) -> dict[str, Any]:
    """Most API requests the server saw in any 1-second window, and the steady rate of record
    requests it saw (the first and last 5% left out)."""
    best = max_per_window(times)
    steady = records[len(records) // 20 : len(records) - len(records) // 20] or records
    span = steady[-1] - steady[0] if len(steady) > 1 else 0.0
    return {
        "requests": len(times),
        "max_1s": best,
        "server_rate": (len(steady) - 1) / span if span else 0.0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="collection sizes, unthrottled")
    parser.add_argument(
        "--concurrency", type=int, default=32, help="requests in flight, unthrottled"
    )
    parser.add_argument(
        "--rate-objects", type=int, default=2400, help="objects for the --rate 80 row"
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--harvest", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=1e6, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.latency)
        return
    if args.harvest is not None:
        harvest(args.harvest, args.rate, args.concurrency, args.data_dir)
        return

    cores = len(os.sched_getaffinity(0))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"# bench/harvest.py  python {sys.version.split()[0]}  {cores} cores  "
        f"load average {load}  (fake API and harvester each in their own process)"
    )
    rows: list[tuple[str, dict[str, Any], float | None]] = []
    for size in (int(s) for s in args.sizes.split(",") if s):
        rows.append(
            (
                f"unthrottled, {size:,} objects, c={args.concurrency}",
                run_case(size, 1e6, args.concurrency, 0.0),
                None,
            )
        )
    rows.append(
        (
            f"--rate 80, 200 ms latency, {args.rate_objects:,} objects, c=32",
            run_case(args.rate_objects, 80.0, 32, 0.2),
            80.0,
        )
    )
    header = (
        f"{'case':<44} {'objects':>8} {'wall s':>7} {'obj/s':>6} {'CPU s/1k':>8} {'RSS MB':>6} "
        f"{'API CPU s':>9} {'max/1s client':>13} {'max/1s server':>13} {'rate at server':>15}"
    )
    print(header)
    print("-" * len(header))
    for name, f, limit in rows:
        per_s = f["objects"] / f["wall_s"] if f["wall_s"] else math.nan
        cpu_k = f["cpu_s"] / (f["objects"] / 1000) if f["objects"] else math.nan
        rate = f"{f['server_rate']:.1f}" + (f" ({f['server_rate'] / limit:.1%})" if limit else "")
        print(
            f"{name:<44} {f['objects']:>8,} {f['wall_s']:>7.1f} {per_s:>6.0f} {cpu_k:>8.2f} "
            f"{f['peak_rss_mb']:>6.0f} {f['server_cpu_s']:>9.1f} {f['client_max_1s']:>13} "
            f"{f['max_1s']:>13} {rate:>15}"
        )
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"(harvest path: {rows[0][1]['path']}; load average now {load}; targets: >= 1,500 obj/s, "
        "RSS < 250 MB and flat, 97-100% of --rate, max/1s <= ceil(rate) + 1)"
    )


if __name__ == "__main__":
    main()
