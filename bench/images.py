"""Benchmark the image pass against a bare aiohttp download loop, on loopback.

A separate server process serves pre-generated JPEGs (aiohttp, sendfile). Each measurement runs
in its own child process (so peak RSS is that run's own):

- baseline: a bare aiohttp loop, N workers, streaming each body to a file (no hashing, no
  validation, no fsync, no database);
- baseline+fsync: the same loop plus an fsync of each file (the durability cost alone);
- ours: `sync_images` with the same concurrency: allowlist check, streaming with sha256, byte
  caps, Pillow identification + completeness check, fdatasync + link + folder fsync into the blob
  store (committed in small groups), one SQLite row per image.

Three sets: many small JPEGs (like primaryImageSmall), fewer large ones (like originals) and a
few huge ones, to show throughput and that peak RSS does not grow with image size.

    .venv/bin/python bench/images.py [--small 400] [--large 24] [--huge 8] [--concurrency 8] [--repeat 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()


# --- images ---------------------------------------------------------------------------------


def _photo_like(size: tuple[int, int], seed: int) -> bytes:
    """A JPEG with smooth gradients plus noise: compresses like a photo, not like flat colour."""
    from PIL import Image, ImageFilter

    rng = random.Random(seed)
    w, h = size
    small = Image.frombytes("RGB", (w // 16, h // 16), rng.randbytes((w // 16) * (h // 16) * 3))
    base = small.resize(size, Image.Resampling.BICUBIC).filter(ImageFilter.GaussianBlur(2))
    noise = Image.frombytes("L", size, rng.randbytes(w * h)).convert("RGB")
    img = Image.blend(base, noise, 0.12)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)
    return buf.getvalue()


def _variant(jpeg: bytes, n: int) -> bytes:
    """The same image with a COM segment naming `n`: distinct bytes, same pixels and size."""
    text = f"bench image {n:06d}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text + jpeg[2:]


def make_set(folder: Path, count: int, size: tuple[int, int], seed: int) -> int:
    """Write `count` distinct JPEGs of `size` into `folder`; returns total bytes."""
    folder.mkdir(parents=True, exist_ok=True)
    bases = [_photo_like(size, seed + k) for k in range(4)]
    total = 0
    for n in range(count):
        data = _variant(bases[n % len(bases)], n)
        (folder / f"{n:06d}.jpg").write_bytes(data)
        total += len(data)
    return total


# --- server process -----------------------------------------------------------------------


def serve(root: Path, port_file: Path) -> None:
    """Serve files under `root` at /<set>/<name> until killed."""
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        path = (root / request.match_info["set"] / request.match_info["name"]).resolve()
        if path.parent.parent != root.resolve() or not path.is_file():
            return web.Response(status=404)
        return web.FileResponse(path, headers={"Content-Type": "image/jpeg"})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/{set}/{name}", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        port_file.write_text(str(port))
        await asyncio.Event().wait()

    asyncio.run(main())


# --- the two clients (each run in a child process) -------------------------------------------


async def _baseline(urls: list[str], out: Path, concurrency: int, *, fsync: bool = False) -> None:
    import aiohttp

    queue: asyncio.Queue[tuple[int, str] | None] = asyncio.Queue()
    for item in enumerate(urls):
        queue.put_nowait(item)
    for _ in range(concurrency):
        queue.put_nowait(None)
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            while (item := await queue.get()) is not None:
                n, url = item
                async with session.get(url) as resp:
                    resp.raise_for_status()
                    with open(out / f"{n}.jpg", "wb") as fh:
                        async for chunk in resp.content.iter_chunked(1 << 18):
                            fh.write(chunk)
                        if fsync:  # the durability ours pays for: file data, in a thread
                            fh.flush()
                            await asyncio.to_thread(os.fsync, fh.fileno())

        await asyncio.gather(*(worker() for _ in range(concurrency)))


async def _ours(urls: list[str], data_dir: Path, host: str, concurrency: int) -> dict[str, Any]:
    from met_harvester.db.connection import connect_sync, open_db, utc_now
    from met_harvester.images.sync import sync_images
    from met_harvester.settings import HarvesterSettings

    conn = connect_sync(data_dir)
    now = utc_now()
    with conn:
        conn.executemany(
            "INSERT INTO objects (object_id, raw_json, content_sha256, first_seen_at, fetched_at, "
            "is_public_domain, primary_image_small) VALUES (?, '{}', '', ?, ?, 1, ?)",
            [(n + 1, now, now, url) for n, url in enumerate(urls)],
        )
    conn.close()
    settings = HarvesterSettings.model_validate(
        {
            "data_dir": data_dir,
            "image_hosts": [host],
            "image_rate": 1_000_000.0,
            "image_concurrency": concurrency,
        }
    )
    db = await open_db(data_dir)
    try:
        cpu_before = _cpu_seconds()
        started = time.perf_counter()
        report = await sync_images(db, settings)
        elapsed = time.perf_counter() - started
        cpu = _cpu_seconds() - cpu_before
    finally:
        await db.close()
    return {"elapsed": elapsed, "cpu_s": cpu, "report": report.as_dict()}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)  # all threads of this process
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which keeps the
    parent's high-water mark across fork + exec)."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, spec_path: Path) -> None:
    """Run one measurement and print a JSON line: elapsed, bytes, peak RSS."""
    spec = json.loads(spec_path.read_text())
    urls: list[str] = spec["urls"]
    if mode == "ours":  # import what ours needs before counting CPU, as for the baseline
        import met_harvester.images.sync  # noqa: F401
    import aiohttp  # noqa: F401

    cpu_at_start = _cpu_seconds()
    work = Path(spec["work"])
    if mode in ("baseline", "baseline+fsync"):
        started = time.perf_counter()
        asyncio.run(_baseline(urls, work, spec["concurrency"], fsync=mode == "baseline+fsync"))
        result: dict[str, Any] = {"elapsed": time.perf_counter() - started}
        assert len(list(work.iterdir())) == len(urls)
    else:
        result = asyncio.run(_ours(urls, work, spec["host"], spec["concurrency"]))
        report = result["report"]
        assert report["stored"] == len(urls), report
    result["rss_mb"] = peak_rss_mb()
    result.setdefault("cpu_s", _cpu_seconds() - cpu_at_start)
    print(json.dumps(result))


def measure(
    mode: str, urls: list[str], host: str, concurrency: int, scratch: Path
) -> dict[str, Any]:
    """One run of `mode` in a child process, on a fresh output folder."""
    work = scratch / f"run-{mode}-{time.monotonic_ns()}"
    work.mkdir()
    spec = scratch / "spec.json"
    spec.write_text(
        json.dumps({"urls": urls, "work": str(work), "host": host, "concurrency": concurrency})
    )
    out = subprocess.run(
        [sys.executable, str(HERE), "--child", mode, str(spec)],
        check=True,
        capture_output=True,
        text=True,
    )
    shutil.rmtree(work)
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- main -----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--small", type=int, default=400, help="small JPEGs (640x480)")
    parser.add_argument("--large", type=int, default=24, help="large JPEGs (4000x3000)")
    parser.add_argument("--huge", type=int, default=8, help="huge JPEGs (8000x6000)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; the median is shown")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "SPEC"), help=argparse.SUPPRESS)
    parser.add_argument("--serve", nargs=2, metavar=("ROOT", "PORT_FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return
    if args.serve:
        serve(Path(args.serve[0]), Path(args.serve[1]))
        return

    scratch = Path(tempfile.mkdtemp(prefix="bench-images-"))
    try:
        root = scratch / "served"
        sets = {
            "small 640x480": ("small", args.small, (640, 480)),
            "large 4000x3000": ("large", args.large, (4000, 3000)),
            "huge 8000x6000": ("huge", args.huge, (8000, 6000)),
        }
        sizes = {}
        for label, (name, count, size) in sets.items():
            if count:
                sizes[label] = make_set(root / name, count, size, seed=len(name))
        port_file = scratch / "port"
        server = subprocess.Popen([sys.executable, str(HERE), "--serve", str(root), str(port_file)])
        try:
            while not port_file.exists() or not port_file.read_text():
                time.sleep(0.05)
            host = f"127.0.0.1:{port_file.read_text()}"
            rows = []
            for label, (name, count, _size) in sets.items():
                urls = [f"http://{host}/{name}/{n:06d}.jpg" for n in range(count)]
                if not count:
                    continue
                base_runs, sync_runs, our_runs = [], [], []
                for _ in range(args.repeat):  # interleaved, so drift hits all alike
                    base_runs.append(measure("baseline", urls, host, args.concurrency, scratch))
                    our_runs.append(measure("ours", urls, host, args.concurrency, scratch))
                    sync_runs.append(
                        measure("baseline+fsync", urls, host, args.concurrency, scratch)
                    )
                rows.append((label, count, sizes[label], base_runs, sync_runs, our_runs))
        finally:
            server.kill()
            server.wait()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print(
        f"image sync vs bare aiohttp loop, loopback, concurrency {args.concurrency}, "
        f"median of {args.repeat} runs, {os.cpu_count()} CPUs"
    )
    header = (
        f"{'set':<16} {'files':>5} {'MB':>6} | {'base MB/s':>9} {'img/s':>6} {'CPU ms/img':>10} "
        f"{'RSS MB':>6} | {'+fsync MB/s':>11} | {'ours MB/s':>9} {'img/s':>6} {'CPU ms/img':>10} "
        f"{'RSS MB':>6} | {'ours/base':>9} {'ours/+fsync':>11}"
    )
    print(header)
    print("-" * len(header))
    for label, count, total, base_runs, sync_runs, our_runs in rows:
        base_t = statistics.median(r["elapsed"] for r in base_runs)
        sync_t = statistics.median(r["elapsed"] for r in sync_runs)
        ours_t = statistics.median(r["elapsed"] for r in our_runs)
        base_cpu = statistics.median(r["cpu_s"] for r in base_runs) * 1000 / count
        ours_cpu = statistics.median(r["cpu_s"] for r in our_runs) * 1000 / count
        mb = total / 1e6
        print(
            f"{label:<16} {count:>5} {mb:>6.1f} | {mb / base_t:>9.1f} {count / base_t:>6.1f} "
            f"{base_cpu:>10.2f} {max(r['rss_mb'] for r in base_runs):>6.0f} | "
            f"{mb / sync_t:>11.1f} | {mb / ours_t:>9.1f} {count / ours_t:>6.1f} {ours_cpu:>10.2f} "
            f"{max(r['rss_mb'] for r in our_runs):>6.0f} | "
            f"{base_t / ours_t:>9.2f} {sync_t / ours_t:>11.2f}"
        )
    load = os.getloadavg()
    print(f"load average during the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")


if __name__ == "__main__":
    main()
