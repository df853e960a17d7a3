"""``python -m met_vision.weights resnet50 resnet101 --out weights``: fetch timm weights once.

Compute nodes have no internet (the templates set ``HF_HUB_OFFLINE=1``). Run this once on a
login node: it downloads each backbone's ImageNet weights through timm (the Hugging Face hub) and
writes ``<out>/<backbone>.safetensors``. Jobs then pass ``--model.pretrained_path <out>`` (a
directory: the file named after the backbone is used) or the file itself.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from met_vision.trainers.backbones import fetch_weights, weights_file

PROG = "met_vision.weights"
__all__ = ["fetch_weights", "main", "weights_file"]  # the functions live in trainers.backbones


def main(argv: Sequence[str] | None = None) -> int:
    """Fetch the named backbones' weights; 2 with one error line when that fails."""
    parser = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0])
    parser.add_argument("backbones", nargs="+", help="timm model names, e.g. resnet50")
    parser.add_argument("--out", default="weights", help="directory for <backbone>.safetensors")
    args = parser.parse_args(argv)
    try:
        for path in fetch_weights(args.backbones, args.out):
            print(f"{path} ({path.stat().st_size / 1e6:.1f} MB)")
    except Exception as exc:  # unknown name, no network, full disk: one line, not a traceback
        print(f"{PROG}: error: {exc}".splitlines()[0], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
