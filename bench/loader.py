"""Images/s of one DataLoader worker: tar shards vs the per-file cache (local disk and a simulated
slow metadata path), against raw originals and a plain PIL loop.

Generates N synthetic "originals" (2000x1500 JPEG q90 with photographic noise, ~0.85 MB), resizes
them into a 384-px per-file cache with `met_vision.prepare.make_cached_copy` and packs the same
bytes into WebDataset tar shards with `met_vision.data.shard_prepare.build_shards` (what
`prepare --format shards` runs). Then, in one process with one torch thread (= one worker), it
times whole passes over the images in a shuffled order through `MetImageDataset` with the
training transform (RandomResizedCrop 224 + flip, uint8 out):

- per-file cache: one `open()` per image (PIL opens the path);
- shards: `ShardReader` (one `os.open` per shard per pass, then `os.pread`);
- raw originals (draft() decoding, the DataModule's fallback) and a plain PIL loop over the cache.

The slow metadata path is simulated in this process: `builtins.open` and `os.open`, the
file-open layer both readers go through, sleep `--open-delay-ms` before opening (what a busy
parallel file system's metadata server costs per file). Files opened are counted at that layer;
bytes read come from the kernel's per-process counter (`rchar` in /proc/self/io). "read only"
fetches a sample's JPEG bytes without decoding. A fresh dataset (fresh descriptors) starts every
pass; the fastest of `--rounds` passes counts, the readers interleaved pass by pass.

    .venv/bin/python bench/loader.py [--images 200] [--rounds 5] [--open-delay-ms 5]
"""

from __future__ import annotations

import argparse
import builtins
import io
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms.functional import center_crop, pil_to_tensor

from met_vision.data.datasets import MetImageDataset
from met_vision.data.shard_prepare import build_shards
from met_vision.data.shards import ShardReader
from met_vision.data.transforms import DataConfig, build_transform
from met_vision.prepare import cache_path, make_cached_copy

INPUT = 224
CACHE = 384


class OpenLayer:
    """Counts (and optionally delays) every file open of this process."""

    def __init__(self) -> None:
        self.delay = 0.0
        self.opened = 0
        self._open, self._os_open = builtins.open, os.open

    def _count(self) -> None:
        self.opened += 1
        if self.delay:
            time.sleep(self.delay)

    @contextmanager
    def installed(self) -> Iterator[OpenLayer]:
        def slow_open(*args: Any, **kwargs: Any) -> Any:
            self._count()
            return self._open(*args, **kwargs)

        def slow_os_open(*args: Any, **kwargs: Any) -> int:
            self._count()
            return self._os_open(*args, **kwargs)

        builtins.open = io.open = slow_open  # type: ignore[assignment]
        os.open = slow_os_open  # type: ignore[assignment]
        try:
            yield self
        finally:
            builtins.open = io.open = self._open  # type: ignore[assignment]
            os.open = self._os_open  # type: ignore[assignment]


def bytes_read() -> int:
    """This process's bytes read through read()/pread() syscalls so far."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def make_originals(out: Path, n: int, seed: int = 0) -> list[Path]:
    """N noisy 2000x1500 (or 1500x2000) JPEGs."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        size = (2000, 1500) if i % 3 else (1500, 2000)
        small = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        base = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        noise = rng.normal(0, 8, (size[1], size[0], 3))
        pixels = np.clip(np.asarray(base, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        path = out / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, "JPEG", quality=90)
        paths.append(path)
    return paths


def plain_pil(path: str) -> torch.Tensor:
    """The reference loop body: open, convert, resize short side, crop, to tensor."""
    with Image.open(path) as file:
        image = file.convert("RGB")
    w, h = image.size
    scale = INPUT / min(w, h)
    size = (max(INPUT, round(w * scale)), max(INPUT, round(h * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    return pil_to_tensor(center_crop(image, [INPUT, INPUT])).float().div_(255)  # type: ignore[arg-type]


def dataset(frame: pd.DataFrame, root: Path | None, decode_size: int | None) -> MetImageDataset:
    """A fresh training dataset (with fresh shard descriptors when `root` is a shard dir)."""
    config = DataConfig(input_size=INPUT, interpolation="bilinear", crop_pct=1.0)
    return MetImageDataset(
        frame, task="multiclass", num_classes=1, decode_size=decode_size,
        transform=build_transform(config, train=True, augment="flip"),
        reader=ShardReader(root) if root is not None else None,
    )  # fmt: skip


def build(root: Path, n: int) -> dict[str, pd.DataFrame | Path]:
    """Originals, their per-file cache and shards of the same bytes; the frames to read them."""
    (root / "raw").mkdir()
    originals = make_originals(root / "raw", n)
    shas = [f"{i:064x}" for i in range(n)]
    cache_dir = root / "cache"
    for src, sha in zip(originals, shas, strict=True):
        _, error = make_cached_copy(str(src), str(cache_path(cache_dir, sha)), CACHE)
        assert error is None, error
    rows = pd.DataFrame(
        {"object_id": range(n), "sha256": shas, "image_path": [str(p) for p in originals],
         "target": 0, "split": "train"}
    )  # fmt: skip
    shard_index, _, _ = build_shards(
        rows, root / "shards", cache_dir, CACHE, names=None, max_bytes=128 * 2**20
    )
    files = rows.assign(path=[str(cache_path(cache_dir, sha)) for sha in shas])
    return {
        "files": files,
        "shards": shard_index.assign(path=files["path"]),
        "raw": rows.assign(path=rows["image_path"]),
        "shard_dir": root / "shards",
    }


def passes(
    readers: dict[str, Callable[[], Callable[[int], object]]],
    order: list[int],
    rounds: int,
    layer: OpenLayer,
) -> dict[str, tuple[float, float, float]]:
    """Per reader: (images/s of the fastest pass, opens per image, bytes read per image)."""
    best = {name: (float("inf"), 0.0, 0.0) for name in readers}
    for _ in range(rounds):
        for name, make in readers.items():
            fetch = make()
            read = bytes_read()  # (opens /proc/self/io: before the open count is taken)
            opened = layer.opened
            start = time.perf_counter()
            for i in order:
                torch.manual_seed(i)  # the same crop and flip of image i in every pass
                fetch(i)
            elapsed = time.perf_counter() - start
            stats = (
                elapsed,
                (layer.opened - opened) / len(order),
                (bytes_read() - read) / len(order),
            )
            best[name] = min(best[name], stats)
    return {name: (len(order) / t, opened, read) for name, (t, opened, read) in best.items()}


def readers_for(data: dict[str, Any]) -> dict[str, Callable[[], Callable[[int], object]]]:
    """The timed pipelines: each makes a fresh per-pass fetch function."""
    files, shards, raw, shard_dir = data["files"], data["shards"], data["raw"], data["shard_dir"]

    def read_only_shards() -> Callable[[int], object]:
        reader = ShardReader(shard_dir)
        where = list(zip(shards["shard"], shards["offset"], shards["size"], strict=True))
        return lambda i: reader.read(*where[i])

    def read_only_files() -> Callable[[int], object]:
        def fetch(i: int) -> bytes:
            with open(files["path"][i], "rb") as handle:
                return handle.read()

        return fetch

    return {
        "per-file cache": lambda: dataset(files, None, INPUT).__getitem__,
        "shards": lambda: dataset(shards, shard_dir, INPUT).__getitem__,
        "per-file cache, read only": read_only_files,
        "shards, read only": read_only_shards,
        "raw originals (draft)": lambda: dataset(raw, None, INPUT).__getitem__,
        "plain PIL loop over the cache": lambda: lambda i: plain_pil(files["path"][i]),
    }


def main() -> None:
    """Run the benchmark and print one table."""
    parser = argparse.ArgumentParser(description="met_vision loader benchmark")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--open-delay-ms", default="2,10", help="comma-separated simulated costs of one open"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker = one thread
    order = list(np.random.default_rng(0).permutation(args.images))
    layer = OpenLayer()
    with tempfile.TemporaryDirectory(prefix="met-loader-bench-") as tmp:
        data = build(Path(tmp), args.images)
        readers = readers_for(data)
        slow = {k: v for k, v in readers.items() if not k.startswith(("raw", "plain"))}
        delays = [float(d) for d in args.open_delay_ms.split(",")]
        with layer.installed():
            tables = [("local disk", passes(readers, order, args.rounds, layer))]
            for delay in delays:
                layer.delay = delay / 1000
                tables.append((f"+{delay:g} ms/open", passes(slow, order, args.rounds, layer)))
        cache_kb = np.mean([Path(p).stat().st_size for p in data["files"]["path"]]) / 1e3
        n_shards = data["shards"]["shard"].nunique()
    print(
        f"{args.images} images (cache {cache_kb:.0f} kB avg, {n_shards} shard(s)), 1 thread, "
        f"fastest of {args.rounds} passes; slow metadata = a sleep in every file open"
    )
    print(
        "| reader | storage | images/s | files opened / image | kB read / image | vs per-file cache |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for storage, results in tables:
        for name, (rate, opened, read) in results.items():
            base = results["per-file cache, read only" if "read only" in name else "per-file cache"]
            print(
                f"| {name} | {storage} | {rate:.1f} | {opened:.3f} | {read / 1e3:.1f} "
                f"| {rate / base[0]:.2f}x |"
            )


if __name__ == "__main__":
    main()
