"""`python -m met_vision.demo` (what `make demo` runs): the whole pipeline, offline, on CPU.

1. start the fake Met API with a synthetic learnable collection with a planted bias its model
   picks up: `Men` and `Women` have no motif of their own, and "Women" tends to come with a warm
   background tint (see `met_vision.demo_story`);
2. `met-harvester sync` against it (rate-limited, progress bar), then `status`;
3. `python -m met_vision.prepare`, then `python -m met_vision.fit` of a small multilabel model;
4. `explain --evaluate` on a handful of test objects, and `audit`;
5. the same fit with group-balanced sampling (the mitigation), and its `audit`;
6. `demo-output/REPORT.md` with the harvest figures, the training curve, the test metrics, a
   Grad-CAM grid, and side by side the flag, the mitigation, the audit after it and its cost.

Every stage is the real command a user would type, run as a subprocess. Re-running is
incremental: the sync only fetches what changed, `prepare` skips cached images, and a finished
training run is reused unless `--retrain`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from met_vision import demo_report, demo_story
from met_vision.demo_commands import PY, DemoError, FakeApiProcess
from met_vision.demo_commands import run_stage as _run

__all__ = ["DemoError", "main", "run_demo"]


def _fit(
    stage: str,
    run_dir: Path,
    log: Path,
    *,
    retrain: bool,
    config: Path,
    data_dir: Path,
    size: int,
    max_epochs: int,
    fit_args: Sequence[str],
) -> None:
    """Train one model into `run_dir`, or reuse the finished run there (unless `retrain`)."""
    if not retrain and (run_dir / "metrics.json").exists():
        print(f"\n== {stage}: reusing the finished run {run_dir} (--retrain to train again)")
        return
    if run_dir.exists():
        shutil.rmtree(run_dir)
    _run(
        stage,
        [
            PY,
            "-m",
            "met_vision.fit",
            "--config",
            str(config),
            "--data.data_dir",
            str(data_dir),
            "--data.image_size",
            str(size),
            "--data.cache_size",
            str(size),
            "--trainer.max_epochs",
            str(max_epochs),
            "--run_dir",
            str(run_dir),
            *fit_args,
        ],
        log,
    )


def _audit(stage: str, ckpt: Path, data_dir: Path, out: Path, log: Path) -> Path:
    """Run the audit of one checkpoint; returns its audit.json."""
    cmd = [PY, "-m", "met_vision.audit", "--ckpt", str(ckpt), "--data-dir", str(data_dir)]
    _run(stage, [*cmd, "--out", str(out)], log)
    return out / "audit.json"


def _best_ckpt(run_dir: Path) -> Path:
    for name in ("best.ckpt", "last.ckpt"):
        found = sorted(run_dir.glob(f"**/{name}"))
        if found:
            return found[0]
    raise DemoError(f"no checkpoint in {run_dir}")


def _test_ids(data_dir: Path, n: int) -> list[int]:
    """A handful of test-split objects that have an image, via the vision library."""
    from met_vision.data.mirror import load_records

    frame = load_records(data_dir, split_fractions=demo_story.SPLIT_FRACTIONS)
    usable = frame[(frame["split"] == "test") & frame["has_image"] & (frame["tags"].map(len) > 0)]
    return [int(i) for i in usable["object_id"].head(n)]


def _sync(
    data_dir: Path, truth: Path, log: Path, objects: int, seed: int, bias: float | None, rate: float
) -> float:
    """`met-harvester sync` against a fake API serving the synthetic collection; its seconds."""
    api = FakeApiProcess(objects, seed, bias, truth, demo_story.UNMARKED_TAGS)
    try:
        started = time.time()
        _run(
            "sync",
            [
                PY,
                "-m",
                "met_harvester",
                "sync",
                "--data-dir",
                str(data_dir),
                "--api-url",
                api.api_url,
                "--rate",
                str(rate),
                "--concurrency",
                "16",
                "--image-hosts",
                api.image_host,
                "--image-rate",
                str(rate),
                "--image-concurrency",
                "8",
                "--block-cooldown",
                "1",
            ],
            log,
        )
        return time.time() - started
    finally:
        api.stop()


def _prepare(data_dir: Path, size: int, log: Path) -> None:
    """`python -m met_vision.prepare` of the demo's multilabel label space."""
    label_opts = ["--task", "multilabel", "--min-count", "5", *demo_story.PREPARE_SPLIT_ARGS]
    _run(
        "prepare",
        [
            PY,
            "-m",
            "met_vision.prepare",
            "--data-dir",
            str(data_dir),
            "--size",
            str(size),
            "--workers",
            str(min(2, os.cpu_count() or 1)),
            *label_opts,
        ],
        log,
    )


def _explain(
    ckpt: Path, data_dir: Path, ids: list[int], truth: Path, explain_dir: Path, log: Path
) -> None:
    """`python -m met_vision.explain --evaluate` of the test objects `ids`."""
    _run(
        "explain",
        [
            PY,
            "-m",
            "met_vision.explain",
            "--ckpt",
            str(ckpt),
            "--data-dir",
            str(data_dir),
            "--object-ids",
            ",".join(map(str, ids)),
            "--method",
            "gradcam",
            "--target",
            "predicted",
            "--evaluate",
            str(truth),
            "--out",
            str(explain_dir),
        ],
        log,
    )


def _fit_and_audit_mitigated(
    runs_root: Path,
    out: Path,
    data_dir: Path,
    log: Path,
    fit: dict[str, Any],
    fit_args: Sequence[str],
) -> tuple[Path, dict[str, Any]]:
    """The same fit with group-balanced sampling, and its audit: (audit.json, metrics)."""
    mitigated_dir = runs_root / "demo-mitigated"
    mitigated_args = [*fit_args, *demo_story.MITIGATION_ARGS]
    _fit("fit (group-balanced)", mitigated_dir, log, fit_args=mitigated_args, **fit)
    mitigated_json = _audit(
        "audit (group-balanced)", _best_ckpt(mitigated_dir), data_dir, out / "audit-mitigated", log
    )
    return mitigated_json, json.loads((mitigated_dir / "metrics.json").read_text())


def _status(data_dir: Path, log: Path) -> dict[str, Any]:
    """The harvester's `status --json` of the demo mirror (its counts printed)."""
    status_text = _run(
        "status",
        [PY, "-m", "met_harvester", "status", "--data-dir", str(data_dir), "--json"],
        log,
        capture=True,
    )
    status: dict[str, Any] = json.loads(status_text)
    print(json.dumps({k: v for k, v in status.items() if isinstance(v, int)}, indent=1))
    return status


def _explain_stage(
    ckpt: Path, data_dir: Path, truth: Path, out: Path, log: Path, explain_n: int
) -> dict[str, Any]:
    """Grad-CAM of `explain_n` test objects: the report's grid and CAM evaluation facts."""
    explain_dir = out / "explain"
    _explain(ckpt, data_dir, _test_ids(data_dir, explain_n), truth, explain_dir, log)
    grids = sorted(explain_dir.glob("*grid*.png"))
    evals = sorted(explain_dir.glob("*evaluat*.json"))
    return {
        "cam_grid": str(grids[0].relative_to(out)) if grids else None,
        "cam_eval": json.loads(evals[0].read_text()) if evals else {},
    }


def run_demo(
    out: Path,
    *,
    objects: int = demo_story.OBJECTS,
    seed: int = 0,
    bias: float | None = 0.9,
    size: int = demo_story.SIZE,
    max_epochs: int = 10,
    explain_n: int = 8,
    retrain: bool = False,
    rate: float = 200.0,
    config: Path = Path("configs/demo-multilabel.yaml"),
    fit_args: Sequence[str] = (),
) -> Path:
    """Run every stage into `out`; returns the REPORT.md path."""
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data_dir = out / "data"
    log = out / "demo.log"
    truth = out / "truth.json"
    runs_root = out / "runs"
    facts: dict[str, Any] = {"objects": objects, "bias": bias}

    facts["sync_seconds"] = _sync(data_dir, truth, log, objects, seed, bias, rate)
    facts["status"] = _status(data_dir, log)
    _prepare(data_dir, size, log)

    fit: dict[str, Any] = {
        "retrain": retrain,
        "config": config,
        "data_dir": data_dir,
        "size": size,
        "max_epochs": max_epochs,
    }
    fit_args = [*demo_story.FIT_SPLIT_ARGS, *fit_args]
    run_dir = runs_root / "demo-multilabel"
    _fit("fit", run_dir, log, fit_args=fit_args, **fit)
    facts["run_dir"] = str(run_dir.relative_to(out))
    facts["metrics"] = json.loads((run_dir / "metrics.json").read_text())
    curve = demo_report.plot_training_curve(run_dir, out / "training_curve.png")
    facts["curve"] = curve.name if curve else None
    ckpt = _best_ckpt(run_dir)

    facts.update(_explain_stage(ckpt, data_dir, truth, out, log, explain_n))

    audit_dir = out / "audit"
    baseline_json = _audit("audit", ckpt, data_dir, audit_dir, log)
    facts["audit_md"] = "audit/report.md"

    mitigated = _fit_and_audit_mitigated(runs_root, out, data_dir, log, fit, fit_args)
    facts["story"] = demo_story.story_lines(
        demo_story.audit_summary(baseline_json),
        demo_story.audit_summary(mitigated[0]),
        facts["metrics"].get("test", facts["metrics"]),
        mitigated[1].get("test", mitigated[1]),
    )

    report = demo_report.write_report(out, facts)
    print(f"\n== report: {report}")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m met_vision.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("demo-output"), help="output directory")
    parser.add_argument(
        "--objects", type=int, default=demo_story.OBJECTS, help="synthetic objects served"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic collection")
    parser.add_argument(
        "--bias", type=float, default=0.9, help="planted Women→warm-tint rate; <0 for none"
    )
    parser.add_argument(
        "--size", type=int, default=demo_story.SIZE, help="image size for cache and training"
    )
    parser.add_argument("--max-epochs", type=int, default=10, help="training epochs")
    parser.add_argument("--explain", type=int, default=8, help="test objects to explain")
    parser.add_argument("--rate", type=float, default=200.0, help="API and image requests/s")
    parser.add_argument(
        "--config", type=Path, default=Path("configs/demo-multilabel.yaml"), help="fit config"
    )
    parser.add_argument("--retrain", action="store_true", help="train again even if a run exists")
    args = parser.parse_args(argv)
    started = time.time()
    try:
        report = run_demo(
            args.out,
            objects=args.objects,
            seed=args.seed,
            bias=None if args.bias < 0 else args.bias,
            size=args.size,
            max_epochs=args.max_epochs,
            explain_n=args.explain,
            retrain=args.retrain,
            rate=args.rate,
            config=args.config,
        )
    except DemoError as exc:
        print(f"met_vision.demo: error: {exc} (see {args.out / 'demo.log'})", file=sys.stderr)
        return 1
    print(f"demo finished in {time.time() - started:.0f} s; open {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
