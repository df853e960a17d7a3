"""`python -m met_vision.explain`: Grad-CAM overlays for a trained model, optionally scored.

    python -m met_vision.explain --ckpt runs/x/checkpoints/best.ckpt --data-dir data \\
        --object-ids 1,2 --method gradcam --target predicted --out explain/
    python -m met_vision.explain --ckpt best.ckpt --images a.jpg b.jpg --target top-k --k 3 --out x/
    python -m met_vision.explain --ckpt best.ckpt --data-dir data --split test --target truth \\
        --evaluate data/truth.json --out x/

Writes one overlay PNG per image and label (``overlays/``), ``grid.png`` and ``index.html``
(title, label and score of every cell) and ``cams.json``. ``--evaluate truth.json`` scores each
CAM whose label has a ground-truth box (the synthetic collection's motif boxes): the pointing
game (is the CAM's maximum inside the box, give or take the tolerance?) and the share of CAM
energy inside the box, per label and overall, beside two baselines that look at no image: a
centre prior (always point at the centre) and a random map (the chance that a uniformly random
maximum falls in the grown box), written to ``evaluation.json``. The tolerance follows Zhang et
al. 2018 (15 px at 224 px), scaled with the input: 6 px at 96 px. See `met_vision.explain.pointing`.

This module holds the command line; `met_vision.explain.explainer.explain` does the work, with
`items` (what to explain), `evaluation` (scores against the truth boxes) and `gallery` (grid and
HTML). Their names stay importable from here.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from met_vision.explain.cam import METHODS
from met_vision.explain.evaluation import crop_box, load_truth, point_in_box, summarize
from met_vision.explain.explainer import choose_targets, explain
from met_vision.explain.gallery import GRID_MAX_CELLS, slug, write_grid, write_html
from met_vision.explain.items import Item, file_items, mirror_items
from met_vision.explain.pointing import Box
from met_vision.inference.inputs import parse_object_ids
from met_vision.inference.options import add_inference_options
from met_vision.inference.predictor import InputError, load_model

PROG = "met_vision.explain"
__all__ = [  # the library names stay importable from here (tests, bench)
    "GRID_MAX_CELLS",
    "Box",
    "Item",
    "build_parser",
    "choose_targets",
    "crop_box",
    "explain",
    "file_items",
    "load_truth",
    "main",
    "mirror_items",
    "point_in_box",
    "slug",
    "summarize",
    "write_grid",
    "write_html",
]


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Grad-CAM explanations of a trained model."
    )
    parser.add_argument("--ckpt", required=True, help="a ClassificationTask checkpoint")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--object-ids", help="comma-separated object ids of the mirror")
    source.add_argument("--images", nargs="+", help="image files")
    source.add_argument(
        "--split", choices=("train", "val", "test", "all"), help="a split of the mirror"
    )
    parser.add_argument(
        "--data-dir", default="data", help="the mirror (for --object-ids / --split)"
    )
    parser.add_argument("--method", default="gradcam", choices=sorted(METHODS))
    parser.add_argument(
        "--target", default="predicted", help="predicted | top-k | truth | <label name>"
    )
    parser.add_argument("--k", type=int, default=3, help="labels per image with --target top-k")
    parser.add_argument("--out", required=True, type=Path, help="output directory")
    parser.add_argument("--evaluate", help="truth.json with motif boxes: score the CAMs")
    parser.add_argument(
        "--target-layer",
        help="module name to explain (default: the deepest layer at least 6x6 at the input size)",
    )
    parser.add_argument(
        "--tolerance",
        type=int,
        default=None,
        help="pointing-game tolerance in pixels (default: 15 px at 224 px, scaled with the input)",
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--limit", type=int, help="explain at most this many images")
    add_inference_options(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (2 on bad input)."""
    args = build_parser().parse_args(argv)
    try:
        loaded = load_model(args.ckpt, args.device, num_workers=args.num_workers)
        if args.images:
            items = file_items(args.images)
        else:
            ids = parse_object_ids(args.object_ids) if args.object_ids else None
            items = mirror_items(loaded, args.data_dir, ids, args.split)
        if args.limit is not None:
            items = items[: args.limit]
        truth = load_truth(args.evaluate) if args.evaluate else None
        result = explain(
            loaded,
            items,
            args.out,
            method=args.method,
            target=args.target,
            k=args.k,
            truth=truth,
            target_layer=args.target_layer,
            batch_size=args.batch_size,
            tolerance=args.tolerance,
        )
    except (InputError, FileNotFoundError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{len(result['cells'])} overlays in {args.out}")
    if result["evaluation"] is not None:
        overall = result["evaluation"]["overall"]
        print(
            f"pointing {overall['pointing']} (centre baseline "
            f"{overall['pointing_centre_baseline']}, random map "
            f"{overall['pointing_random_baseline']}), energy in box "
            f"{overall['energy_in_box']} over {overall['n']} boxes"
        )
    for error in result["errors"]:
        print(f"{PROG}: warning: {error}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
