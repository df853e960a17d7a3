"""Images/s of `python -m met_vision.predict` on CPU: this tree against a baseline revision.

Builds a synthetic mirror (original-size JPEGs, ~800-1600 px) and a checkpoint (one training
step, made by the baseline's code so that both versions can read it), then runs the real
command of both versions, one after the other, on the same `--object-ids` (N objects), and
prints one table: wall seconds of the command (imports, model loading, mirror lookup, decoding,
forward passes, writing the table), images/s and the ratio. The baseline's source is taken
from git (`git archive <rev>`), so the comparison is the code as it was, not a re-creation.

    .venv/bin/python bench/predict.py [--objects 1000] [--backbone resnet18] [--image-size 160]
        [--baseline 13e5794] [--num-workers 2]
"""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from pathlib import Path

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
    spec = importlib.util.spec_from_file_location("mm", root / "tests/vision/data/make_mirror.py")
    mm = importlib.util.module_from_spec(spec); spec.loader.exec_module(mm)
    mm.make_mirror(work / "data", n_objects=int(n * 1.3), seed=1, size="original", specials=False)
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


def timed_predict(tree: Path, work: Path, extra: list[str]) -> float:
    """Wall seconds of one predict command run from ``tree``'s sources."""
    cmd = [sys.executable, "-m", "met_vision.predict", "--ckpt", str(work / "model.ckpt")]
    cmd += ["--data-dir", str(work / "data"), "--object-ids", (work / "ids.txt").read_text()]
    cmd += ["--out", str(work / f"preds-{tree.name}.parquet"), *extra]
    env = {**os.environ, "PYTHONPATH": pythonpath(tree)}
    start = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    """Build the inputs, time both versions, print the table."""
    parser = argparse.ArgumentParser(description="predict img/s: this tree vs a baseline rev")
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--image-size", type=int, default=160)
    parser.add_argument("--baseline", default="13e5794", help="git revision before the change")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        baseline = export_revision(args.baseline, work / "baseline")
        env = {**os.environ, "PYTHONPATH": pythonpath(baseline)}
        make = [sys.executable, "-c", MAKE, str(baseline), str(work), args.backbone]
        made = subprocess.run(
            [*make, str(args.image_size), str(args.objects)],
            env=env,
            capture_output=True,
            text=True,
        )
        if made.returncode:
            raise SystemExit(f"making the inputs failed:\n{made.stderr[-3000:]}")
        batch = ["--batch-size", str(args.batch_size)]
        before = timed_predict(baseline, work, batch)
        current = ROOT  # this working tree
        after = timed_predict(
            current, work, [*batch, "--device", "cpu", "--num-workers", str(args.num_workers)]
        )
    n = args.objects
    print(
        f"predict on CPU, {n} objects, {args.backbone} at {args.image_size} px, load {os.getloadavg()[0]:.1f}"
    )
    print("| version | seconds | images/s | vs baseline |\n|---|---|---|---|")
    print(f"| baseline {args.baseline} | {before:.1f} | {n / before:.1f} | 1.00x |")
    print(
        f"| this tree (--num-workers {args.num_workers}) | {after:.1f} | {n / after:.1f} | {before / after:.2f}x |"
    )


if __name__ == "__main__":
    main()
