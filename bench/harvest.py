"""Harvest benchmark: the real `sync` path (client, limiter, DB writes) against the fake Met API.

The fake API runs in its own process, and each harvest runs in its own process too, so the CPU
seconds and peak RSS are the harvester's alone and per run. Prints one table:

    .venv/bin/python bench/harvest.py                       # 10k and 100k unthrottled, --rate 80
    .venv/bin/python bench/harvest.py --sizes 2000 --rate-objects 400   # quick look

Rows: objects/s unthrottled (high --rate), side by side with a Scrapy spider storing the same raw
JSON into SQLite (`bench/harvest_scrapy.py`; needs `pip install scrapy`, an optional bench
dependency: without it the Scrapy rows are left out), harvester CPU ms per record, peak RSS, the
rate achieved at `--rate 80` with 200 ms of server latency, measured at the server, and two
firewalled scenarios with the blocks they took (and per hour): `--rate 80 --concurrency 16`
against a firewall blocking 3 s above 50 requests/s, and the defaults (no rate options) against
a Met-like rolling window (more than 45 requests in 30 s blocks for 60 s) for `--polite-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
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
UNTHROTTLED = 1e6
"""The --rate of the unthrottled rows (no start is timed there: `client_max_1s` is 0)."""


# ---------------------------------------------------------------------------- child: fake API
def serve(n_objects: int, latency: float, firewall: str | None) -> None:
    """Run the fake API on 127.0.0.1:0, print its URL, serve until killed. `firewall` is
    "N,W,S": more than N requests in W seconds blocks for S seconds."""
    from aiohttp import web

    from met_harvester.testing import (
        CollectionConfig,
        FakeMetAPI,
        FaultConfig,
        FirewallConfig,
        SyntheticCollection,
    )

    arrivals: list[tuple[float, str]] = []  # (time the request arrived, path)

    @web.middleware
    async def note_arrival(request: web.Request, handler: Any) -> web.StreamResponse:
        arrivals.append((time.time(), request.path))
        return await handler(request)

    async def arrivals_json(request: web.Request) -> web.Response:
        return web.json_response({"arrivals": arrivals})

    async def main() -> None:
        collection = SyntheticCollection(CollectionConfig(n_objects=n_objects, seed=0))
        wall = None
        if firewall:
            n, window, block = firewall.split(",")
            wall = FirewallConfig(int(n), float(window), float(block))
        api = FakeMetAPI(collection, faults=FaultConfig(latency=latency), firewall=wall)
        # the fake API logs a request when it has answered (after the latency); the rate the
        # server sees is measured on arrival, before any handler runs
        api.app.middlewares.insert(0, note_arrival)
        api.app.router.add_get("/_bench/arrivals", arrivals_json)
        await api.start("127.0.0.1", 0)
        print(api.api_url, flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


# ---------------------------------------------------------------------------- child: harvester
def harvest(
    api_url: str, rate: float | None, concurrency: int | None, data_dir: str, seconds: float
) -> None:
    """One full `sync` (no images) into a fresh data dir; print a JSON line of measurements.
    `rate`/`concurrency` None: the defaults; `seconds` > 0: stop the sync after that long.
    The modules are imported before the clock starts (as the Scrapy side imports Scrapy): the
    CPU measured is the sync's, not the interpreter loading the code."""
    import met_harvester.client
    import met_harvester.sync  # noqa: F401  (imported here, not inside the timed run)
    from met_harvester.ratelimit import AdaptiveRateLimiter
    from met_harvester.settings import HarvesterSettings

    options: dict[str, Any] = {
        "data_dir": Path(data_dir),
        "api_url": api_url,
        "images": False,
        "timeout": 60.0,
    }
    if rate is not None:
        options["rate"] = rate
    if concurrency is not None:
        options["concurrency"] = concurrency
    settings = HarvesterSettings(**options)
    starts: list[float] = []  # when the limiter let each request go (the client's view)
    if rate is None or rate < UNTHROTTLED:  # unthrottled, the wrapper's CPU would be counted
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
        report = asyncio.run(_sync_for(settings, seconds))
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
                "sys_s": end_cpu.ru_stime - start_cpu.ru_stime,
                "peak_rss_mb": end_cpu.ru_maxrss / 1024,
                "client_max_1s": max_per_window(starts),
            }
        ),
        flush=True,
    )


async def _sync_for(settings: Any, seconds: float) -> Any:
    from met_harvester.sync import run_sync

    stop = asyncio.Event()
    if seconds > 0:
        asyncio.get_running_loop().call_later(seconds, stop.set)
    return await run_sync(settings, stop_event=stop)


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
def _child_command(
    who: str,
    api_url: str,
    data_dir: str,
    rate: float | None,
    concurrency: int | None,
    seconds: float,
) -> list[str]:
    if who == "scrapy":
        scrapy_script = str(HERE.parent / "harvest_scrapy.py")
        return [sys.executable, scrapy_script, api_url, data_dir, str(concurrency or 32)]
    command = [sys.executable, str(HERE), "--harvest", api_url, "--data-dir", data_dir]
    if rate is not None:
        command += ["--rate", str(rate)]
    if concurrency is not None:
        command += ["--concurrency", str(concurrency)]
    return [*command, "--seconds", str(seconds)]


def run_case(
    n_objects: int,
    rate: float | None,
    concurrency: int | None,
    latency: float,
    *,
    who: str = "ours",
    firewall: str | None = None,
    seconds: float = 0.0,
) -> dict[str, Any]:
    """Start a fake API process, harvest it in another process (ours, or the Scrapy spider),
    collect both sides' figures."""
    serve_cmd = [sys.executable, str(HERE), "--serve", str(n_objects), "--latency", str(latency)]
    if firewall:
        serve_cmd += ["--firewall", firewall]
    server = subprocess.Popen(serve_cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        api_url = server.stdout.readline().strip()
        if not api_url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"fake API did not start (got {api_url!r})")
        server_proc = psutil.Process(server.pid)
        server_cpu0 = sum(server_proc.cpu_times()[:2])
        with tempfile.TemporaryDirectory(prefix="bench-harvest-") as data_dir:
            command = _child_command(who, api_url, data_dir, rate, concurrency, seconds)
            out = subprocess.run(command, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            raise RuntimeError(f"{who} harvest failed: {out.stderr.strip().splitlines()[-1:]}")
        figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
        figures["server_cpu_s"] = sum(server_proc.cpu_times()[:2]) - server_cpu0
        base = api_url.split("/public/")[0]
        with urllib.request.urlopen(f"{base}/_bench/arrivals", timeout=60) as resp:
            log = json.load(resp)["arrivals"]
        with urllib.request.urlopen(f"{base}/_admin/stats", timeout=60) as resp:
            stats = json.load(resp)
        figures["blocks"] = stats["firewall_blocks"]
        figures["refused"] = stats["firewall_refused"]
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
    args = _parse_args()
    if args.serve is not None:
        serve(args.serve, args.latency, args.firewall)
        return
    if args.harvest is not None:
        harvest(args.harvest, args.rate, args.concurrency, args.data_dir, args.seconds)
        return
    cores = len(os.sched_getaffinity(0))
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"# bench/harvest.py  python {sys.version.split()[0]}  {cores} cores  "
        f"load average {load}  (fake API and harvester each in their own process)"
    )
    rows = _run_rows(args)
    _print_table(rows)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(
        f"(load average now {load}; targets: >= 5x Scrapy's obj/s and <= 0.40 CPU ms/record, "
        "RSS flat, 97-100% of --rate, max/1s <= ceil(rate) + 1, few blocks per hour)"
    )


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--sizes", default="10000,100000", help="collection sizes, unthrottled")
    parser.add_argument("--concurrency", type=int, default=32, help="requests in flight")
    parser.add_argument(
        "--rate-objects", type=int, default=2400, help="objects for the --rate 80 row"
    )
    parser.add_argument(
        "--polite-seconds", type=float, default=90.0, help="length of the defaults row"
    )
    parser.add_argument("--no-scrapy", action="store_true", help="leave the Scrapy rows out")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--latency", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--firewall", help=argparse.SUPPRESS)
    parser.add_argument("--harvest", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    return parser.parse_args()


Row = tuple[str, dict[str, Any], float | None]


def _run_rows(args: argparse.Namespace) -> list[Row]:
    scrapy = not args.no_scrapy and importlib.util.find_spec("scrapy") is not None
    rows: list[Row] = []
    c = args.concurrency
    for size in (int(s) for s in args.sizes.split(",") if s):
        rows.append(
            (f"ours, unthrottled, {size:,} obj, c={c}", run_case(size, UNTHROTTLED, c, 0.0), None)
        )
        if scrapy:
            figures = run_case(size, None, c, 0.0, who="scrapy")
            rows.append((f"Scrapy, unthrottled, {size:,} obj, c={c}", figures, None))
    rate_row = run_case(args.rate_objects, 80.0, 32, 0.2)
    rows.append((f"--rate 80, 200 ms latency, {args.rate_objects:,} obj, c=32", rate_row, 80.0))
    fast_wall = run_case(1500, 80.0, 16, 0.0, firewall="50,1,3")
    rows.append(("--rate 80 -c 16 vs 3 s blocks >50/s, 1,500 obj", fast_wall, None))
    polite = run_case(5000, None, None, 0.0, firewall="45,30,60", seconds=args.polite_seconds)
    rows.append((f"defaults vs >45 in 30 s (60 s blocks), {args.polite_seconds:g} s", polite, None))
    return rows


def _print_table(rows: list[Row]) -> None:
    header = (
        f"{'case':<50} {'objects':>8} {'wall s':>7} {'obj/s':>6} {'CPU ms/rec':>10} "
        f"{'RSS MB':>6} {'max/1s srv':>10} {'rate at server':>15} {'blocks':>6} "
        f"{'refused':>7} {'blocks/h':>8}"
    )
    print(header)
    print("-" * len(header))
    for name, f, limit in rows:
        per_s = f["objects"] / f["wall_s"] if f["wall_s"] else math.nan
        cpu_ms = 1000 * f["cpu_s"] / f["objects"] if f["objects"] else math.nan
        rate = f"{f['server_rate']:.1f}" + (f" ({f['server_rate'] / limit:.1%})" if limit else "")
        per_hour = 3600 * f["blocks"] / f["wall_s"] if f["wall_s"] else math.nan
        print(
            f"{name:<50} {f['objects']:>8,} {f['wall_s']:>7.1f} {per_s:>6.0f} {cpu_ms:>10.3f} "
            f"{f['peak_rss_mb']:>6.0f} {f['max_1s']:>10} {rate:>15} {f['blocks']:>6} "
            f"{f['refused']:>7} {per_hour:>8.1f}"
        )
    ours = [f for name, f, _ in rows if name.startswith("ours, unthrottled")]
    theirs = [f for name, f, _ in rows if name.startswith("Scrapy, unthrottled")]
    for mine, scrapy in zip(ours, theirs, strict=False):
        speed = (mine["objects"] / mine["wall_s"]) / (scrapy["objects"] / scrapy["wall_s"])
        cpu = (mine["cpu_s"] / mine["objects"]) / (scrapy["cpu_s"] / scrapy["objects"])
        print(
            f"ours / Scrapy, {mine['objects']:,} objects: {speed:.2f}x obj/s, {cpu:.2f}x CPU/record"
        )


if __name__ == "__main__":
    main()
