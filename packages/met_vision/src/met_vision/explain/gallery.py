"""What `explain` shows: overlay file names, the PNG grid and the HTML page of every overlay."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

GRID_MAX_CELLS = 60


def slug(text: str) -> str:
    """A file-name-safe version of a label."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "label"


def write_grid(cells: list[dict[str, Any]], path: Path, title: str) -> None:
    """A PNG grid of overlays, each with the image title, label and score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = cells[:GRID_MAX_CELLS]
    cols = min(6, max(1, len(shown)))
    rows = max(1, -(-len(shown) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.7 * rows + 0.4), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, cell in zip(axes.ravel(), shown, strict=False):
        ax.imshow(np.asarray(Image.open(path.parent / cell["overlay"])))
        ax.set_title(f"{cell['title'][:22]}\n{cell['label']} {cell['score']:.2f}", fontsize=7)
    extra = f" (first {GRID_MAX_CELLS} of {len(cells)})" if len(cells) > len(shown) else ""
    fig.suptitle(title + extra, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / (2.7 * rows + 0.4)))
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_html(cells: list[dict[str, Any]], path: Path, title: str) -> None:
    """An HTML page listing every overlay with its title, label and score."""
    rows = "\n".join(
        "<figure><img src='{src}' width='192'><figcaption><b>{t}</b><br>{label} — {score:.3f}"
        "{ev}</figcaption></figure>".format(
            src=html.escape(c["overlay"]),
            t=html.escape(c["title"]),
            label=html.escape(c["label"]),
            score=c["score"],
            ev="" if c.get("hit") is None else f"<br>pointing {'hit' if c['hit'] else 'miss'}",
        )
        for c in cells
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}figure{display:inline-block;margin:6px;"
        "font-size:12px;width:192px}</style></head>"
        f"<body><h1>{html.escape(title)}</h1>\n{rows}\n</body></html>\n"
    )
    path.write_text(page)
