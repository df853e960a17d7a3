"""GPU throughput of the three backbones: model alone (train, inference) and loader alone, beside
timm's published figures scaled to this device.

    .venv/bin/python bench/gpu.py                          # on a GPU host: full sizes
    .venv/bin/python bench/gpu.py --tiny                   # anywhere (CPU): tiny sizes, a smoke run

Prints one table, one row per model (resnet50, resnet101, inception_resnet_v2 at 224/224/299):

- model alone: a batch held on the device, bf16 autocast (CUDA; fp32 on CPU) and channels-last; ``train`` is
  forward + backward + AdamW step, ``infer`` is forward under ``torch.no_grad``; images/s over
  ``--steps`` steps after ``--warmup`` steps.
- loader alone: met_vision's training dataset (`MetImageDataset` with the training transform)
  over synthetic JPEGs at the prepared-cache size, in a DataLoader with ``--workers`` workers,
  batches copied to the device; images/s of the loader with no model.
- timm: the published figures of timm's benchmark CSVs (github.com/huggingface/pytorch-image-models,
  ``results/``), AMP + NHWC like this run:
  inference ``benchmark-infer-amp-nhwc-pt240-cu124-rtx4090.csv`` (RTX 4090, PyTorch 2.4.0, batch
  512); training ``benchmark-train-amp-nhwc-pt112-cu113-rtx3090.csv`` (RTX 3090, PyTorch 1.12).
  Scaled to this device by ``min(dense bf16 tensor TFLOPS ratio, memory bandwidth ratio)`` of this
  card to the reference card (`DEVICES`, from the vendors' data sheets): a convolution net
  speeds up by no more than the less improved of the two. ``--reference-scale`` overrides it.
  The ratio columns are measured / scaled reference: a rough expectation, not a target.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import timm
import torch
from PIL import Image
from torch.utils.data import DataLoader

from met_vision.data import MetImageDataset
from met_vision.data.transforms import build_transform, resolve_data_config

MODELS = ("resnet50", "resnet101", "inception_resnet_v2")
# timm results/, AMP + NHWC: (images/s, batch size) at the model's native resolution
TIMM_INFER_RTX4090 = {
    "resnet50": 5088.39,
    "resnet101": 3320.94,
    "inception_resnet_v2": 1690.61,
}
TIMM_TRAIN_RTX3090 = {"resnet50": 1218.01, "resnet101": 747.89, "inception_resnet_v2": 358.54}
# name fragment -> (dense FP16/BF16 tensor TFLOPS with FP32 accumulate, memory GB/s)
DEVICES = {
    "RTX 3090": (71.0, 936.0),
    "RTX 4090": (165.2, 1008.0),
    "V100": (125.0, 900.0),
    "A40": (149.7, 696.0),
    "L40S": (362.1, 864.0),
    "A100-SXM4-80GB": (312.0, 2039.0),
    "A100": (312.0, 1555.0),
    "H100 PCIe": (756.0, 2000.0),
    "H100": (989.4, 3350.0),
    "H200": (989.4, 4800.0),
}


def device_scale(name: str, reference: str) -> float | None:
    """min(TFLOPS ratio, bandwidth ratio) of device ``name`` to ``reference``; None if unknown."""
    known = next((spec for key, spec in DEVICES.items() if key in name), None)
    if known is None:
        return None
    ref = DEVICES[reference]
    return min(known[0] / ref[0], known[1] / ref[1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(
    step: Callable[[], None], batch: int, steps: int, warmup: int, device: torch.device
) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return batch * steps / (time.perf_counter() - start)


def model_rates(
    name: str, size: int, batch: int, steps: int, warmup: int, device: torch.device, bf16: bool
) -> tuple[float, float]:
    """(train images/s, inference images/s) of ``name`` alone, channels-last, bf16 autocast."""
    model = timm.create_model(name, num_classes=1000).to(device, memory_format=torch.channels_last)
    x = torch.randn(batch, 3, size, size, device=device).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.randint(0, 1000, (batch,), device=device)
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=fused)

    def train_step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def infer_step() -> None:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            model(x)

    model.train()
    train = _rate(train_step, batch, steps, warmup, device)
    model.eval()
    infer = _rate(infer_step, batch, steps, warmup, device)
    return train, infer


def make_jpegs(out: Path, n: int, size: int, seed: int = 0) -> list[str]:
    """``n`` noisy JPEGs (q90) of ``size`` px on the short side, like prepared-cache files."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        shape = (size, size * 4 // 3) if i % 2 else (size * 4 // 3, size)
        base = rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)
        image = Image.fromarray(base).resize((shape[1], shape[0]), Image.Resampling.BICUBIC)
        noisy = np.asarray(image, dtype=np.float32) + rng.normal(0, 8, (*shape, 3))
        path = out / f"{i:05d}.jpg"
        Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=90)
        paths.append(str(path))
    return paths


def loader_rate(
    name: str, paths: list[str], batch: int, workers: int, batches: int, device: torch.device
) -> float:
    """Images/s of the training dataset + transform in a DataLoader, batches moved to ``device``."""
    config = resolve_data_config(name, None)
    frame = pd.DataFrame({"path": paths, "object_id": range(len(paths)), "target": 0})
    dataset = MetImageDataset(
        frame,
        task="multiclass",
        num_classes=2,
        transform=build_transform(config, train=True, augment="flip"),
        decode_size=config.input_size,
    )
    loader = DataLoader(
        dataset,
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        drop_last=True,
        persistent_workers=workers > 0,
        collate_fn=dataset.collate,  # the DataModule's own batching (None: PyTorch's default)
    )
    seen, start = 0, 0.0
    iterator = iter(loader)
    for i in range(batches + 1):
        try:
            item = next(iterator)
        except StopIteration:
            iterator = iter(loader)
            item = next(iterator)
        item["image"].to(device, non_blocking=True)
        if i == 0:  # the first batch pays for the workers' start
            _sync(device)
            start = time.perf_counter()
        else:
            seen += len(item["image"])
    _sync(device)
    return seen / (time.perf_counter() - start)


def _figure(value: float) -> float:
    """Three significant digits (a tiny CPU run is far below 1 image/s)."""
    return float(f"{value:.3g}")


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--workers", type=int, default=8, help="loader workers")
    parser.add_argument("--loader-batches", type=int, default=40)
    parser.add_argument("--images", type=int, default=512, help="synthetic JPEGs for the loader")
    parser.add_argument("--reference-scale", type=float, default=None)
    parser.add_argument(
        "--fp32", action="store_true", help="no bf16 autocast (the default on CPU, where it crawls)"
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="tiny sizes (a CPU smoke run: 80 px, batch 2, 1 step, 1 worker)",
    )
    args = parser.parse_args(argv)
    if args.tiny:
        args.batch, args.steps, args.warmup = 2, 1, 0
        args.workers, args.loader_batches, args.images = 1, 2, 6
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    infer_scale = args.reference_scale or (
        device_scale(card, "RTX 4090") if device.type == "cuda" else None
    )
    train_scale = args.reference_scale or (
        device_scale(card, "RTX 3090") if device.type == "cuda" else None
    )
    bf16 = device.type == "cuda" and not args.fp32
    torch.backends.cudnn.benchmark = True
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in [m for m in args.models.split(",") if m]:
            native = resolve_data_config(name, None).input_size
            size = 80 if args.tiny else native  # inception_resnet_v2 needs >= 75 px
            cache = max(size, int(native * 1.15)) if not args.tiny else size
            paths = make_jpegs(Path(tmp), args.images, cache)
            train, infer = model_rates(
                name, size, args.batch, args.steps, args.warmup, device, bf16
            )
            loader = loader_rate(name, paths, args.batch, args.workers, args.loader_batches, device)
            ref_train = TIMM_TRAIN_RTX3090.get(name, float("nan")) * (train_scale or float("nan"))
            ref_infer = TIMM_INFER_RTX4090.get(name, float("nan")) * (infer_scale or float("nan"))
            rows.append(
                {
                    "model": name,
                    "px": size,
                    "batch": args.batch,
                    "train": _figure(train),
                    "infer": _figure(infer),
                    f"loader ({args.workers} workers)": _figure(loader),
                    "timm train scaled": round(ref_train, 0),
                    "timm infer scaled": round(ref_infer, 0),
                    "train / timm": round(train / ref_train, 2),
                    "infer / timm": round(infer / ref_infer, 2),
                }
            )
    scales = f"scale train {train_scale}, infer {infer_scale}" if train_scale else "no scaling"
    precision = "bf16 autocast" if bf16 else "fp32"
    print(f"device: {card}; torch {torch.__version__}; {precision} + channels-last; {scales}")
    print(pd.DataFrame(rows).to_string(index=False, na_rep="-"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
