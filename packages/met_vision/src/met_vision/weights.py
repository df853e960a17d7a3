"""``python -m met_vision.weights resnet50 resnet101 --out weights``: fetch timm weights once.

Compute nodes have no internet (the templates set ``HF_HUB_OFFLINE=1``). Run this once on a
login node: it downloads each backbone's ImageNet weights through timm (the Hugging Face hub) and
writes ``<out>/<backbone>.safetensors``. Jobs then pass ``--model.pretrained_path <out>`` (a
directory: the file named after the backbone is used) or the file itself.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

PROG = "met_vision.weights"


def weights_file(directory: Path | str, backbone: str) -> Path:
    """Where `fetch_weights` puts ``backbone``'s weights under ``directory``."""
    return Path(directory) / f"{backbone}.safetensors"


def fetch_weights(names: Sequence[str], out: Path | str, *, pretrained: bool = True) -> list[Path]:
    """Write ``<out>/<name>.safetensors`` for every timm backbone name (atomically).

    Args:
        names: timm model names (``timm.list_models()``).
        out: the directory to write (created).
        pretrained: download the published weights (False: timm's random init, for tests).
    """
    import timm
    from safetensors.torch import save_file

    from met_vision.trainers.backbones import check_backbone_name

    Path(out).mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        check_backbone_name(name)
        model = timm.create_model(name, pretrained=pretrained)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        target = weights_file(out, name)
        partial = target.with_name(target.name + ".partial")
        save_file(state, str(partial), metadata={"timm_model": name, "pretrained": str(pretrained)})
        os.replace(partial, target)
        written.append(target)
    return written


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
