"""The inference options every command shares: device, loader workers, devices, chunks."""

from __future__ import annotations

import argparse


def add_inference_options(parser: argparse.ArgumentParser, *, multi_device: bool = False) -> None:
    """``--device`` and ``--num-workers``; with ``multi_device`` also ``--devices`` and
    ``--chunk-size`` (resumable, one process per device)."""
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument(
        "--num-workers", type=int, default=2, help="DataLoader workers decoding images"
    )
    if multi_device:
        parser.add_argument("--devices", type=int, default=1, help="processes, one per device")
        parser.add_argument(
            "--chunk-size", type=int, default=1024, help="images per resumable part file"
        )
