"""`python -m met_vision.audit`: the gender-label bias audit of a trained model.

    python -m met_vision.audit --ckpt best.ckpt --data-dir data --out report/
    python -m met_vision.audit --ckpt mitigated.ckpt --baseline baseline.ckpt --out report/

Three analyses, each of groups against labels, on the objects of one split:

- ``depicted``: gender groups from tags (``--gender-vocab``, default Women/Girls = female,
  Men/Boys = male) against every other label;
- ``artist``: the artist's / constituents' gender (female / unspecified) against every label;
- ``background``: an image attribute (warm background, from the border pixels) against the
  gender labels the model predicts: does the model tie "Women" to a colour?

For each: group sizes, label and image distributions, precision/recall/F1 per group and label
with the gaps (difference, ratio), label co-occurrence per group in the truth and in the
predictions, bias amplification (Zhao et al. 2017; the reference bias from the training split by
default) with a bootstrap interval, directional bias amplification (Wang & Russakovsky 2021), and
Grad-CAM border-against-centre saliency. The audited objects are the held-out ones (validation +
test) by default. The pairs tested are fixed from the reference before any resampling, each gets
a one-sided test, and a pair is *flagged* when Benjamini-Hochberg over every pair tested
(``--fdr``, q = 0.05) rejects it and its BA exceeds ``--ba-threshold`` (see
:mod:`met_vision.fairness.stats`). Writes ``report.md``, PNG plots and ``audit.json`` (every number
shown).

This module holds the command line. :func:`met_vision.fairness.audit.run_audit` computes the
figures (with :mod:`~met_vision.fairness.audit_data`, :mod:`~met_vision.fairness.analysis` and
:mod:`~met_vision.fairness.saliency`) and :mod:`met_vision.fairness.report` renders them; their
names stay importable from here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from met_vision.fairness import groups
from met_vision.fairness.analysis import analyse, overall_metrics
from met_vision.fairness.audit import comparison, run_audit
from met_vision.fairness.audit_data import AuditData, AuditOptions, collect
from met_vision.fairness.plots import plot_analysis, plot_comparison, plot_saliency
from met_vision.fairness.report import write_report
from met_vision.fairness.saliency import saliency
from met_vision.inference.options import add_inference_options
from met_vision.inference.predictor import InputError, load_model

__all__ = [
    "AuditData",
    "AuditOptions",
    "analyse",
    "build_parser",
    "collect",
    "comparison",
    "main",
    "overall_metrics",
    "plot_analysis",
    "plot_comparison",
    "plot_saliency",
    "run_audit",
    "saliency",
    "write_report",
]

PROG = "met_vision.audit"


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Gender-label bias audit of a trained model."
    )
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument(
        "--split",
        default=AuditOptions.split,
        choices=("train", "val", "test", "heldout", "all"),
        help="the audited objects (default heldout: validation + test)",
    )
    parser.add_argument(
        "--reference",
        default=AuditOptions.reference,
        choices=("train", "audited"),
        help="reference bias from the training split (Zhao et al.) or the audited truth",
    )
    parser.add_argument(
        "--decisions",
        default=AuditOptions.decisions,
        choices=("rate", "model"),
        help="multilabel: predict each label at its training rate (Wang & Russakovsky 2021; "
        "default) or use the checkpoint's tuned thresholds",
    )
    parser.add_argument(
        "--fdr", type=float, default=AuditOptions.fdr_q, help="Benjamini-Hochberg q"
    )
    parser.add_argument("--baseline", help="another checkpoint to compare side by side")
    parser.add_argument(
        "--gender-vocab", help="e.g. 'Women=female,Girls=female,Men=male,Boys=male'"
    )
    parser.add_argument("--ba-threshold", type=float, default=AuditOptions.ba_threshold)
    parser.add_argument("--min-support", type=int, default=AuditOptions.min_support)
    parser.add_argument("--bootstrap", type=int, default=AuditOptions.n_boot, help="resamples")
    parser.add_argument("--warm-threshold", type=float, default=AuditOptions.warm_threshold)
    parser.add_argument("--cam-samples", type=int, default=AuditOptions.cam_samples)
    parser.add_argument("--cam-method", default="gradcam")
    parser.add_argument("--target-layer", help="CAM layer (default: per backbone)")
    parser.add_argument("--seed", type=int, default=0)
    add_inference_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        vocab = groups.parse_gender_vocab(args.gender_vocab)
        options = AuditOptions(
            split=args.split,
            reference=args.reference,
            decisions=args.decisions,
            fdr_q=args.fdr,
            vocab=tuple(vocab.items()),
            ba_threshold=args.ba_threshold,
            min_support=args.min_support,
            n_boot=args.bootstrap,
            warm_threshold=args.warm_threshold,
            cam_samples=args.cam_samples,
            cam_method=args.cam_method,
            target_layer=args.target_layer,
            seed=args.seed,
        )
        device = {"device": args.device, "num_workers": args.num_workers}
        report = run_audit(load_model(args.ckpt, **device), args.data_dir, options)
        baseline = None
        if args.baseline:
            baseline = run_audit(load_model(args.baseline, **device), args.data_dir, options)
            report["comparison"] = comparison(report, baseline)
        path = write_report(report, args.out, baseline)
    except (InputError, FileNotFoundError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    stats = report["statistics"]
    print(
        f"{len(report['flags'])} flagged pair(s) of {stats['pairs_tested']} tested "
        f"({stats['fdr']}); report in {path}"
    )
    for flag in report["flags"]:
        print(
            f"FLAG {flag['analysis']}: {flag['group']} / {flag['label']}: "
            f"BA {flag['bias_amplification']:+.3f} (CI {flag['ci'][0]:+.3f} .. "
            f"{flag['ci'][1]:+.3f}), p {flag['p_value']:.2g}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
