"""Training throughput: ClassificationTask in Lightning vs a plain PyTorch loop, and backbone images/s.

    .venv/bin/python bench/train.py [--steps 12] [--rounds 3] [--models resnet50,...]
        [--reference-csv timm-benchmark.csv --reference-scale 0.8]

Prints one table:

1. ``task vs plain``: train-step images/s of ``ClassificationTask`` under ``Trainer.fit`` and of a
   hand-written loop (same timm model, loss, AdamW, per-step LR schedule, the same batches held
   in memory), measured in alternating rounds; the ratio is task / plain (target >= 0.95).
2. ``backbone``: forward+backward (train) and forward-only (inference) images/s of resnet50,
   resnet101 and inception_resnet_v2 at their native resolution (224/224/299), float32 on CPU.
3. on CUDA only: the same with bf16 autocast and channels_last, and, when ``--reference-csv``
   gives one of timm's published benchmark CSVs (``model``, ``infer_samples_per_sec``,
   ``train_samples_per_sec``), the ratio to its figures times ``--reference-scale`` (the
   relative speed of this card to the one in the CSV).
"""

from __future__ import annotations

import argparse
import csv
import logging
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import timm
import torch
from torch.utils.data import DataLoader, Dataset

from met_vision.trainers.classification import ClassificationTask
from met_vision.trainers.optimization import warmup_cosine

warnings.filterwarnings("ignore")
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # keep the output to one table


class Batches(Dataset):
    """Pre-built dict batches (batch_size=None in the loader): no decoding in the measurement."""

    def __init__(self, batches: list[dict[str, torch.Tensor]]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.batches[i]


def make_batches(steps: int, batch: int, size: int, classes: int) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    return [
        {
            "image": torch.randn(batch, 3, size, size, generator=g),
            "label": torch.randint(0, classes, (batch,), generator=g),
        }
        for _ in range(steps)
    ]


class StepTimer(pl.Callback):
    """Seconds from the end of the first (warm-up) batch to the end of the last one."""

    def __init__(self) -> None:
        self.start = 0.0
        self.end = 0.0

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        now = time.perf_counter()
        if trainer.global_step == 1:
            self.start = now
        self.end = now


def lightning_rate(model_name: str, batches: list[dict[str, torch.Tensor]], classes: int) -> float:
    task = ClassificationTask(
        task="multiclass", backbone=model_name, num_classes=classes, warmup_epochs=0.5
    )
    timer = StepTimer()
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        callbacks=[timer],
    )
    loader = DataLoader(Batches(batches), batch_size=None, shuffle=False)
    trainer.fit(task, loader)
    images = sum(len(b["image"]) for b in batches[1:])
    return images / (timer.end - timer.start)


def plain_rate(model_name: str, batches: list[dict[str, torch.Tensor]], classes: int) -> float:
    model = timm.create_model(model_name, num_classes=classes)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3,
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, warmup_cosine(len(batches) // 2, len(batches), 0.01)
    )
    loss_fn = torch.nn.CrossEntropyLoss()
    model.train()
    start = 0.0
    for i, batch in enumerate(batches):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(batch["image"]), batch["label"])
        loss.backward()
        opt.step()
        sched.step()
        if i == 0:
            start = time.perf_counter()
    images = sum(len(b["image"]) for b in batches[1:])
    return images / (time.perf_counter() - start)


def backbone_rates(
    name: str, batch: int, steps: int, device: str, bf16_channels_last: bool = False
) -> tuple[float, float, int]:
    """(train images/s, inference images/s, input size) at the model's native resolution."""
    model = timm.create_model(name, num_classes=1000).to(device)
    size = timm.data.resolve_data_config({}, model=model)["input_size"][-1]
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 1000, (batch,), device=device)
    if bf16_channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=bf16_channels_last)

    def sync() -> None:
        if device == "cuda":
            torch.cuda.synchronize()

    def train_step() -> None:
        with autocast:
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    model.train()
    train_step()
    sync()
    t = time.perf_counter()
    for _ in range(steps):
        train_step()
    sync()
    train = batch * steps / (time.perf_counter() - t)
    model.eval()
    with torch.no_grad(), autocast:
        model(x)
        sync()
        t = time.perf_counter()
        for _ in range(steps):
            model(x)
        sync()
    infer = batch * steps / (time.perf_counter() - t)
    return train, infer, size


def read_reference(path: Path | None) -> dict[str, dict[str, float]]:
    if path is None:
        return {}
    with path.open() as fh:
        return {
            row["model"]: {
                k: float(v) for k, v in row.items() if k.endswith("samples_per_sec") and v
            }
            for row in csv.DictReader(fh)
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--task-model", default="resnet18", help="backbone of the task-vs-plain row"
    )
    parser.add_argument("--task-size", type=int, default=96)
    parser.add_argument("--task-batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=3, help="alternating task/plain rounds")
    parser.add_argument("--models", default="resnet50,resnet101,inception_resnet_v2")
    parser.add_argument("--cpu-batch", type=int, default=4)
    parser.add_argument("--cpu-steps", type=int, default=3)
    parser.add_argument("--gpu-batch", type=int, default=128)
    parser.add_argument("--gpu-steps", type=int, default=20)
    parser.add_argument("--reference-csv", type=Path, default=None)
    parser.add_argument("--reference-scale", type=float, default=1.0)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows: list[tuple[str, str, str, str]] = []

    batches = make_batches(args.steps + 1, args.task_batch, args.task_size, 10)
    task_rates, plain_rates = [], []
    for _ in range(args.rounds):
        plain_rates.append(plain_rate(args.task_model, batches, 10))
        task_rates.append(lightning_rate(args.task_model, batches, 10))
    task, plain = statistics.median(task_rates), statistics.median(plain_rates)
    what = f"{args.task_model} {args.task_size}px b{args.task_batch}, median of {args.rounds}"
    rows.append(
        (
            "task vs plain loop (CPU, train img/s)",
            what,
            f"{task:.1f} vs {plain:.1f}",
            f"{task / plain:.3f}x",
        )
    )

    models = [m for m in args.models.split(",") if m]
    for name in models:
        train, infer, size = backbone_rates(name, args.cpu_batch, args.cpu_steps, "cpu")
        rows.append(
            (
                f"{name} CPU fp32",
                f"{size}px b{args.cpu_batch}",
                f"train {train:.2f} / infer {infer:.2f}",
                "-",
            )
        )

    reference = read_reference(args.reference_csv)
    if torch.cuda.is_available():
        card = torch.cuda.get_device_name()
        for name in models:
            train, infer, size = backbone_rates(name, args.gpu_batch, args.gpu_steps, "cuda", True)
            ref = reference.get(name, {})
            ratio = "-"
            if ref.get("infer_samples_per_sec"):
                ratio = f"infer {infer / (ref['infer_samples_per_sec'] * args.reference_scale):.2f}x timm"
            rows.append(
                (
                    f"{name} {card} bf16+NHWC",
                    f"{size}px b{args.gpu_batch}",
                    f"train {train:.0f} / infer {infer:.0f}",
                    ratio,
                )
            )
    else:
        rows.append(
            (
                "GPU (bf16 + channels_last)",
                "no CUDA device here",
                "not measured",
                "timm figures not compared",
            )
        )

    widths = [
        max(len(r[i]) for r in [("case", "setting", "images/s", "ratio"), *rows]) for i in range(4)
    ]
    for r in [("case", "setting", "images/s", "ratio"), tuple("-" * w for w in widths), *rows]:
        print(" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))


if __name__ == "__main__":
    main()
