"""Learnable synthetic images: a textured background per classification and one distinct motif per tag.

Each classification is a background *family* (stripes, rings, checkerboard, ...) with random colours,
phase and scale; each tag is a high-contrast shape in a fixed colour at a random place. A warm tint,
when applied, changes only the background, never the motifs. Patterns are laid out in coordinates
relative to the short side, so the small and original variants show the same picture.
"""

from __future__ import annotations

import colorsys
import io
import math
import random
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

# Classification -> background family.
BACKGROUND_FAMILIES: dict[str, str] = {
    "Paintings": "gradient",
    "Prints": "stripes",
    "Ceramics": "rings",
    "Textiles": "checkerboard",
    "Photographs": "noise",
    "Drawings": "dots",
}

# Tag -> (shape, fill RGB). Shapes and colours are both distinct.
MOTIFS: dict[str, tuple[str, tuple[int, int, int]]] = {
    "Men": ("square", (0, 60, 255)),
    "Women": ("circle", (230, 0, 0)),
    "Boys": ("triangle", (0, 160, 0)),
    "Girls": ("diamond", (255, 0, 255)),
    "Flowers": ("star", (255, 235, 0)),
    "Horses": ("plus", (0, 230, 255)),
    "Birds": ("triangle_down", (255, 120, 0)),
    "Boats": ("hexagon", (0, 0, 110)),
    "Trees": ("ring", (255, 255, 255)),
    "Portraits": ("x", (0, 0, 0)),
    "Landscapes": ("bars", (160, 255, 0)),
    "Musical Instruments": ("hourglass", (130, 0, 255)),
}

WARM_TINT = np.array([255.0, 140.0, 40.0])
TINT_STRENGTH = 0.45
# Scenes are drawn at most this large, then resized up (the very large image is an upscale).
MAX_RENDER_SIDE = 1024


@dataclass(frozen=True)
class Scene:
    """Everything needed to draw one image at any size."""

    family: str
    colors: tuple[tuple[int, int, int], tuple[int, int, int]]
    angle: float  # radians
    period: float  # relative to the short side
    phase: float
    center: tuple[float, float]
    noise_seed: int
    tint: bool
    motifs: tuple[tuple[str, tuple[float, float, float, float]], ...]  # (tag, normalised box)


def _muted_color(rng: random.Random, value: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.08, 0.38), value)
    return (int(r * 255), int(g * 255), int(b * 255))


def make_scene(
    rng: random.Random, classification: str, tags: list[str], tint: bool, width: int, height: int
) -> Scene:
    """Draw the random parameters of one picture (layout depends on the aspect ratio)."""
    family = BACKGROUND_FAMILIES[classification]
    v1 = rng.uniform(0.5, 0.68)
    v2 = min(0.85, v1 + rng.uniform(0.1, 0.17))
    colors = (_muted_color(rng, v1), _muted_color(rng, v2))
    if rng.random() < 0.5:
        colors = (colors[1], colors[0])
    base_angle = {"stripes": 45.0, "checkerboard": 0.0, "gradient": 90.0}.get(family, 0.0)
    jitter = {"stripes": 8.0, "checkerboard": 10.0, "gradient": 180.0}.get(family, 180.0)
    angle = math.radians(base_angle + rng.uniform(-jitter, jitter))
    period = {
        "stripes": rng.uniform(0.07, 0.12),
        "rings": rng.uniform(0.08, 0.14),
        "checkerboard": rng.uniform(0.09, 0.16),
        "dots": rng.uniform(0.08, 0.13),
    }.get(family, 1.0)
    short = min(width, height)
    boxes: list[tuple[str, tuple[float, float, float, float]]] = []
    placed: list[tuple[float, float, float, float]] = []
    for tag in tags:
        size = rng.uniform(0.22, 0.3) * short
        box = (0.0, 0.0, 0.0, 0.0)
        for _ in range(60):
            x0 = rng.uniform(0, width - size)
            y0 = rng.uniform(0, height - size)
            box = (x0, y0, x0 + size, y0 + size)
            if all(_disjoint(box, other, margin=0.02 * short) for other in placed):
                break
        placed.append(box)
        boxes.append((tag, (box[0] / width, box[1] / height, box[2] / width, box[3] / height)))
    return Scene(
        family=family,
        colors=colors,
        angle=angle,
        period=period,
        phase=rng.uniform(0, 2 * math.pi),
        center=(rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8)),
        noise_seed=rng.getrandbits(31),
        tint=tint,
        motifs=tuple(boxes),
    )


def _disjoint(a: tuple[float, ...], b: tuple[float, ...], margin: float) -> bool:
    return (
        a[2] + margin <= b[0]
        or b[2] + margin <= a[0]
        or a[3] + margin <= b[1]
        or b[3] + margin <= a[1]
    )


def _pattern(scene: Scene, width: int, height: int) -> np.ndarray:
    """Background mix factor in [0, 1], shape (height, width)."""
    short = float(min(width, height))
    u = (np.arange(width, dtype=np.float32) / short)[None, :]
    v = (np.arange(height, dtype=np.float32) / short)[:, None]
    ca, sa = math.cos(scene.angle), math.sin(scene.angle)
    if scene.family == "gradient":
        span = (width * abs(ca) + height * abs(sa)) / short
        t = (u * ca + v * sa) / max(span, 1e-6)
        t = t - t.min()
        return np.clip(t / max(float(t.max()), 1e-6), 0, 1)
    if scene.family == "stripes":
        w = u * ca + v * sa
        return (np.sin(2 * np.pi * w / scene.period + scene.phase) > 0).astype(np.float32)
    if scene.family == "rings":
        cx, cy = scene.center[0] * width / short, scene.center[1] * height / short
        r = np.sqrt((u - cx) ** 2 + (v - cy) ** 2)
        return (np.sin(2 * np.pi * r / scene.period + scene.phase) > 0).astype(np.float32)
    if scene.family == "checkerboard":
        ru = u * ca + v * sa
        rv = -u * sa + v * ca
        cells = np.floor(ru / scene.period) + np.floor(rv / scene.period)
        return (np.mod(cells, 2) == 0).astype(np.float32)
    if scene.family == "dots":
        p = scene.period
        fu = np.mod(u / p + scene.phase, 1.0) - 0.5
        fv = np.mod(v / p + scene.phase, 1.0) - 0.5
        return ((fu**2 + fv**2) < 0.09).astype(np.float32)
    # "noise": smooth random blobs plus fine grain.
    gen = np.random.default_rng(scene.noise_seed)
    coarse = Image.fromarray((gen.random((8, 8)) * 255).astype(np.uint8), "L")
    smooth = np.asarray(coarse.resize((width, height), Image.Resampling.BICUBIC), np.float32) / 255
    grain = gen.random((height, width), dtype=np.float32)
    return np.clip(0.8 * smooth + 0.2 * grain, 0, 1)


def _draw_motif(
    draw: ImageDraw.ImageDraw, shape: str, fill: tuple[int, int, int], box: tuple[float, ...]
) -> None:
    x0, y0, x1, y1 = box
    s = x1 - x0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    outline: tuple[int, int, int] = (255, 255, 255)
    if fill != (0, 0, 0):
        outline = (int(fill[0] * 0.4), int(fill[1] * 0.4), int(fill[2] * 0.4))
    lw = max(1, round(s / 10))

    def poly(points: list[tuple[float, float]]) -> None:
        draw.polygon(points, fill=fill, outline=outline, width=lw)

    if shape == "square":
        draw.rectangle((x0, y0, x1, y1), fill=fill, outline=outline, width=lw)
    elif shape == "circle":
        draw.ellipse((x0, y0, x1, y1), fill=fill, outline=outline, width=lw)
    elif shape == "triangle":
        poly([(cx, y0), (x1, y1), (x0, y1)])
    elif shape == "triangle_down":
        poly([(x0, y0), (x1, y0), (cx, y1)])
    elif shape == "diamond":
        poly([(cx, y0), (x1, cy), (cx, y1), (x0, cy)])
    elif shape == "star":
        pts = []
        for k in range(10):
            r = s / 2 if k % 2 == 0 else s / 3.3
            a = -math.pi / 2 + k * math.pi / 5
            pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        poly(pts)
    elif shape == "plus":
        t = s / 6
        poly([(cx - t, y0), (cx + t, y0), (cx + t, cy - t), (x1, cy - t), (x1, cy + t), (cx + t, cy + t),
              (cx + t, y1), (cx - t, y1), (cx - t, cy + t), (x0, cy + t), (x0, cy - t), (cx - t, cy - t)])  # fmt: skip
    elif shape == "hexagon":
        poly(
            [
                (cx + s / 2 * math.cos(a), cy + s / 2 * math.sin(a))
                for a in np.arange(6) * math.pi / 3
            ]
        )
    elif shape == "ring":  # an annulus: the background shows through the hole
        band = max(2, round(s * 0.28))
        draw.ellipse((x0, y0, x1, y1), outline=fill, width=band)
        draw.ellipse((x0, y0, x1, y1), outline=outline, width=lw)
        r_in = s / 2 - band
        draw.ellipse((cx - r_in, cy - r_in, cx + r_in, cy + r_in), outline=outline, width=lw)
    elif shape == "x":
        t = s / 7
        draw.line((x0 + t, y0 + t, x1 - t, y1 - t), fill=fill, width=max(2, round(s / 4)))
        draw.line((x0 + t, y1 - t, x1 - t, y0 + t), fill=fill, width=max(2, round(s / 4)))
    elif shape == "bars":  # three bands, the middle one dark
        h = s / 3
        draw.rectangle((x0, y0, x1, y1), fill=fill, outline=outline, width=lw)
        draw.rectangle((x0, y0 + h, x1, y0 + 2 * h), fill=outline)
    elif shape == "hourglass":
        poly([(x0, y0), (x1, y0), (cx, cy), (x1, y1), (x0, y1), (cx, cy)])
    else:  # pragma: no cover - MOTIFS and this function are kept in step
        raise ValueError(f"unknown motif shape {shape!r}")


def render_scene(scene: Scene, width: int, height: int) -> Image.Image:
    """Render `scene` as an RGB image of exactly `width` x `height` pixels."""
    scale = min(1.0, MAX_RENDER_SIDE / max(width, height))
    rw, rh = max(1, round(width * scale)), max(1, round(height * scale))
    t = _pattern(scene, rw, rh)[..., None]
    c1 = np.array(scene.colors[0], np.float32)
    c2 = np.array(scene.colors[1], np.float32)
    bg = c1 * (1 - t) + c2 * t
    if scene.tint:
        bg = bg * (1 - TINT_STRENGTH) + WARM_TINT.astype(np.float32) * TINT_STRENGTH
    img = Image.fromarray(np.clip(bg, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(img)
    for tag, (nx0, ny0, nx1, ny1) in scene.motifs:
        shape, fill = MOTIFS[tag]
        _draw_motif(draw, shape, fill, (nx0 * rw, ny0 * rh, nx1 * rw, ny1 * rh))
    if (rw, rh) != (width, height):
        img = img.resize((width, height), Image.Resampling.BILINEAR)
    return img


def encode_image(img: Image.Image, fmt: str, mode: str, progressive: bool = False) -> bytes:
    """Encode as JPEG or PNG in the given mode ("RGB", "L" or "CMYK")."""
    if img.mode != mode:
        img = img.convert(mode)
    buf = io.BytesIO()
    if fmt == "PNG":
        img.save(buf, "PNG", compress_level=3)
    else:
        img.save(buf, "JPEG", quality=88, progressive=progressive, optimize=False)
    return buf.getvalue()


_BOMB_CACHE: dict[int, bytes] = {}


def decompression_bomb_png(side: int = 40_000) -> bytes:
    """A small valid PNG (1-bit, all black) declaring `side` x `side` pixels: a decompression bomb."""
    if side not in _BOMB_CACHE:
        import struct

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        # Identical all-zero chunks compress identically after a full flush, so one compressed
        # chunk is repeated; the zlib wrapper's Adler-32 covers all the rows.
        row = b"\x00" * (1 + (side + 7) // 8)
        rows = row * 1000
        comp = zlib.compressobj(9, zlib.DEFLATED, -15)
        block = comp.compress(rows) + comp.flush(zlib.Z_FULL_FLUSH)
        tail = zlib.compressobj(9, zlib.DEFLATED, -15)
        rest = row * (side % 1000)
        last = tail.compress(rest) + tail.flush()
        adler = 1
        for _ in range(side // 1000):
            adler = zlib.adler32(rows, adler)
        adler = zlib.adler32(rest, adler)
        parts = [b"\x78\xda", block * (side // 1000), last, struct.pack(">I", adler)]
        ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
        _BOMB_CACHE[side] = (
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b"")
        )
    return _BOMB_CACHE[side]
