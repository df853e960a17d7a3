"""Images/s of `python -m met_vision.predict` on CPU: this tree against a baseline revision.

Builds a synthetic mirror (original-size JPEGs, ~800-1600 px) and a checkpoint (one training
step, made by the baseline's code so that both versions can read it), then runs the real
command of both versions, alternately (`--rounds` pairs, so that both meet the same load), on
the same `--object-ids` (N objects), and prints one table: wall seconds of the command
(imports, model loading, mirror lookup, decoding, forward passes, writing the table), its CPU
seconds (user + system, with its loader workers), images/s and the ratios, per round and median.
The CPU ratio depends far less on what else runs on the machine than the wall ratio. The
baseline's source is taken from git (`git archive <rev>`), so the comparison is the code as it
was, not a re-creation.

    .venv/bin/python bench/predict.py [--objects 1000] [--backbone resnet18] [--image-size 160]
        [--baseline 13e5794] [--num-workers 2] [--images original|small] [--work DIR] [--rounds 3]

``--work DIR`` keeps the mirror and checkpoint there and reuses them on the next run. Both
outputs are compared: same objects, same top-k labels, scores equal up to float noise.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
SRC = ("packages/met_harvester/src", "packages/met_vision/src")
FIXTURES = "tests/vision/data"  # make_mirror.py: the baseline's own, for its own harvester


def export_revision(rev: str, out: Path) -> Path:
    """The two packages' sources at ``rev`` under ``out``."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, *SRC, FIXTURES], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(out, filter="data")
    return out


def pythonpath(tree: Path) -> str:
    """PYTHONPATH of a source tree."""
    return os.pathsep.join(str(tree / s) for s in SRC)


MAKE = textwrap.dedent(
    """
    import importlib.util, sys, warnings
    from pathlib import Path
    import lightning as L
    warnings.filterwarnings("ignore")
    root, work, backbone, size, n = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
    variant = sys.argv[6]
    spec = importlib.util.spec_from_file_location("mm", root / "tests/vision/data/make_mirror.py")
    mm = importlib.util.module_from_spec(spec); spec.loader.exec_module(mm)
    mm.make_mirror(work / "data", n_objects=int(n * 1.3), seed=1, size=variant, specials=False)
    from met_vision.data import MetDataModule  # the baseline's module paths
    from met_vision.tasks import ClassificationTask
    dm = MetDataModule(data_dir=str(work / "data"), task="multilabel", top_k=10, min_count=5,
                       model_name=backbone, image_size=size, batch_size=8, num_workers=0)
    dm.setup("fit")
    model = ClassificationTask(task="multilabel", backbone=backbone, num_classes=dm.num_classes,
                               labels=dm.label_space.manifest())
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, limit_val_batches=0, accelerator="cpu",
                        logger=False, enable_checkpointing=False, enable_progress_bar=False)
    trainer.fit(model, datamodule=dm)
    trainer.save_checkpoint(work / "model.ckpt")
    from met_vision.db import load_records
    ids = load_records(work / "data").query("has_image")["object_id"].astype(int).tolist()[:n]
    (work / "ids.txt").write_text(",".join(map(str, ids)))
    """
)


def timed_predict(tree: Path, work: Path, extra: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one predict command run from ``tree``'s sources; CPU is
    user + system time of the command and its loader workers (``RUSAGE_CHILDREN``)."""
    cmd = [sys.executable, "-m", "met_vision.predict", "--ckpt", str(work / "model.ckpt")]
    cmd += ["--data-dir", str(work / "data"), "--object-ids", (work / "ids.txt").read_text()]
    cmd += ["--out", str(work / f"preds-{tree.name}.parquet"), *extra]
    env = {**os.environ, "PYTHONPATH": pythonpath(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def make_inputs(
    baseline: Path, work: Path, backbone: str, size: int, n: int, variant: str = "original"
) -> None:
    """Mirror, checkpoint and id list under ``work`` (kept when already there)."""
    if (work / "ids.txt").is_file():
        return
    env = {**os.environ, "PYTHONPATH": pythonpath(baseline)}
    make = [sys.executable, "-c", MAKE, str(baseline), str(work), backbone, str(size), str(n)]
    make.append(variant)
    made = subprocess.run(make, env=env, capture_output=True, text=True)
    if made.returncode:
        raise SystemExit(f"making the inputs failed:\n{made.stderr[-3000:]}")


def max_difference(before: Path, after: Path) -> float:
    """Largest score difference of two predict tables; exits when labels or objects differ."""
    old, new = pd.read_parquet(before), pd.read_parquet(after)
    keys = ["object_id", "rank", "label"]
    if len(old) != len(new) or not old[keys].equals(new[keys]):
        raise SystemExit(f"predictions differ: {before} vs {after}")
    return float(np.abs(old["score"].to_numpy() - new["score"].to_numpy()).max())


def main() -> None:
    """Build the inputs, time both versions, print the table."""
    parser = argparse.ArgumentParser(description="predict img/s: this tree vs a baseline rev")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--baseline", default="13e5794", help="git revision before the change")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--images",
        choices=("original", "small"),
        default="original",
        help="mirror image variant: originals (~800-1600 px) or the API's small web images",
    )
    parser.add_argument("--work", type=Path, help="keep and reuse the inputs in this folder")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/this tree pairs to run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        baseline = work / "baseline"
        if not baseline.is_dir():
            export_revision(args.baseline, baseline)
        make_inputs(baseline, work, args.backbone, args.image_size, args.objects, args.images)
        batch = ["--batch-size", str(args.batch_size)]
        ours = [*batch, "--device", "cpu", "--num-workers", str(args.num_workers)]
        rounds = []
        for _ in range(max(1, args.rounds)):  # alternate, so that both see the same load
            old = timed_predict(baseline, work, batch)
            new = timed_predict(ROOT, work, ours)
            rounds.append((old, new, os.getloadavg()[0]))
        diff = max_difference(
            work / f"preds-{baseline.name}.parquet", work / f"preds-{ROOT.name}.parquet"
        )
    print_table(args, rounds, diff)


def print_table(
    args: argparse.Namespace,
    rounds: list[tuple[tuple[float, float], tuple[float, float], float]],
    diff: float,
) -> None:
    """One row per round (wall and CPU seconds of both, ratios) and the medians."""
    n = args.objects
    print(
        f"predict on CPU, {n} objects ({args.images} images), {args.backbone} at "
        f"{args.image_size} px, batch {args.batch_size}; baseline {args.baseline} vs this tree "
        f"(--num-workers {args.num_workers}); seconds wall (CPU: user+sys with workers)"
    )
    print("| round | load | baseline | this tree | images/s | wall ratio | CPU ratio |")
    print("|---|---|---|---|---|---|---|")
    walls, cpus = [], []
    for i, ((old_wall, old_cpu), (new_wall, new_cpu), load) in enumerate(rounds, start=1):
        walls.append(old_wall / new_wall)
        cpus.append(old_cpu / new_cpu)
        print(
            f"| {i} | {load:.1f} | {old_wall:.1f} ({old_cpu:.1f}) | {new_wall:.1f} ({new_cpu:.1f}) "
            f"| {n / old_wall:.1f} -> {n / new_wall:.1f} | {walls[-1]:.2f}x | {cpus[-1]:.2f}x |"
        )
    print(
        f"median wall ratio {statistics.median(walls):.2f}x (min {min(walls):.2f}x), "
        f"median CPU ratio {statistics.median(cpus):.2f}x (min {min(cpus):.2f}x)"
    )
    print(f"same objects and top-k labels; max abs score difference {diff:.2g}")


if __name__ == "__main__":
    main()
