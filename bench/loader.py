"""Images/s per worker of met_vision's training pipeline: prepared cache vs raw originals vs a
plain PIL loop.

Generates N synthetic "originals" (2000x1500 JPEG q90 with photographic noise, ~0.85 MB), prepares them at 384 px with `met_vision.prepare.make_cached_copy`, then times, in one
process (= one DataLoader worker):

- prepared: `MetImageDataset` over the cache, training transform (RandomResizedCrop 224 + flip +
  normalise), i.e. exactly what a DataLoader worker runs;
- raw originals: the same dataset and transform over the originals (draft() decoding, as the
  DataModule's raw fallback does), and without draft() for reference;
- plain PIL loop over the same cached files: open, convert RGB, resize short side to 224 (bilinear),
  centre crop, to float tensor; and, doing exactly that work, the DataModule's evaluation
  transform (resize 224 bilinear, centre crop, normalise) through `MetImageDataset`.

    .venv/bin/python bench/loader.py [--images 100] [--rounds 7]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torchvision.transforms.functional import center_crop, pil_to_tensor

from met_vision.data.datamodule import MetImageDataset
from met_vision.data.transforms import DataConfig, build_transform
from met_vision.prepare import make_cached_copy

INPUT = 224
CACHE = 384


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


def plain_pil(path: Path) -> torch.Tensor:
    """The reference loop body: open, convert, resize short side, crop, to tensor."""
    with Image.open(path) as file:
        image = file.convert("RGB")
    w, h = image.size
    scale = INPUT / min(w, h)
    size = (max(INPUT, round(w * scale)), max(INPUT, round(h * scale)))
    image = image.resize(size, Image.Resampling.BILINEAR)
    return pil_to_tensor(center_crop(image, [INPUT, INPUT])).float().div_(255)  # type: ignore[arg-type]


def rates(pipelines: dict[str, Callable[[int], object]], n: int, rounds: int) -> dict[str, float]:
    """Images/s of each pipeline: every item is timed `rounds` times, the pipelines interleaved
    item by item, and each item's fastest time counts (robust to load from other processes on a
    shared machine). Item i gets the same augmentation in every round (seeded with i)."""
    fastest = {name: [float("inf")] * n for name in pipelines}
    for _ in range(rounds):
        for i in range(n):
            for name, fn in pipelines.items():
                torch.manual_seed(i)  # the same random crop and flip of item i in every round
                start = time.perf_counter()
                fn(i)
                fastest[name][i] = min(fastest[name][i], time.perf_counter() - start)
    return {name: n / sum(times) for name, times in fastest.items()}


def dataset(paths: list[Path], decode_size: int | None, train: bool = True) -> MetImageDataset:
    frame = pd.DataFrame(
        {"object_id": range(len(paths)), "path": [str(p) for p in paths], "target": 0}
    )
    config = DataConfig(input_size=INPUT, interpolation="bilinear", crop_pct=1.0)
    transform = build_transform(config, train=train, augment="flip")
    return MetImageDataset(
        frame, task="multiclass", num_classes=1, transform=transform, decode_size=decode_size
    )


def main() -> None:
    """Run the benchmark and print one table."""
    parser = argparse.ArgumentParser(description="met_vision loader benchmark")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)  # one DataLoader worker = one thread
    with tempfile.TemporaryDirectory(prefix="met-loader-bench-") as tmp:
        root = Path(tmp)
        (root / "raw").mkdir()
        originals = make_originals(root / "raw", args.images)
        cached = [root / "cache" / f"{p.stem}.jpg" for p in originals]
        for src, dst in zip(originals, cached, strict=True):
            _, error = make_cached_copy(str(src), str(dst), CACHE)
            assert error is None, error
        raw_mb = sum(p.stat().st_size for p in originals) / len(originals) / 1e6
        cache_kb = sum(p.stat().st_size for p in cached) / len(cached) / 1e3
        prepared_ds = dataset(cached, INPUT)
        raw_ds = dataset(originals, INPUT)
        raw_nodraft_ds = dataset(originals, None)
        eval_ds = dataset(cached, INPUT, train=False)
        n = args.images
        measured = rates(
            {
                "prepared cache (384 px) -> train transform": prepared_ds.__getitem__,
                "raw originals (draft) -> train transform": raw_ds.__getitem__,
                "raw originals (no draft) -> train transform": raw_nodraft_ds.__getitem__,
                "plain PIL loop over the cache": lambda i: plain_pil(cached[i]),
                "prepared cache -> eval transform (same work as plain)": eval_ds.__getitem__,
            },
            n,
            args.rounds,
        )
        rows = list(measured.items())
    prepared = rows[0][1]
    print(
        f"{n} images, originals {raw_mb:.2f} MB avg, cache {cache_kb:.0f} kB avg, each item timed {args.rounds}x (fastest counts), 1 thread"
    )
    print("| pipeline | images/s per worker | prepared / this |")
    print("|---|---:|---:|")
    for name, value in rows:
        print(f"| {name} | {value:.1f} | {prepared / value:.2f}x |")
    print(
        f"targets: prepared >= 3x raw (draft): {prepared / rows[1][1]:.2f}x; "
        f"prepared within 10% of plain PIL: {prepared / rows[3][1]:.2f}x"
    )


if __name__ == "__main__":
    main()
