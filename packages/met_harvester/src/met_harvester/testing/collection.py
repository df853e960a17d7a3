"""A deterministic synthetic Met collection: ids, records, learnable images and their ground truth.

Pure (no HTTP). Per-object attributes that listing filters need (department, metadataDate,
tags, public domain, tint) are drawn once as numpy arrays, so 500,000 objects cost a few MB;
records and images are generated on demand from (seed, object_id) and cached briefly.
"""

from __future__ import annotations

import datetime as dt
import functools
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from met_harvester.testing.records import build_record
from met_harvester.testing.render import Scene, encode_image, make_scene, render_scene
from met_harvester.testing.vocab import CLASS_VOCAB, TAG_URLS

TAG_VOCAB: tuple[str, ...] = tuple(TAG_URLS)
CLASSIFICATIONS: tuple[str, ...] = tuple(CLASS_VOCAB)
# Tag frequencies (relative); every tag stays common enough to learn.
TAG_WEIGHTS: tuple[float, ...] = (1.4, 1.4, 0.8, 0.8, 1.0, 0.8, 1.0, 0.7, 0.9, 1.0, 0.9, 0.6)
CLASS_WEIGHTS: tuple[float, ...] = (0.24, 0.2, 0.16, 0.12, 0.14, 0.14)
# The one object whose original image is very large (public domain, RGB JPEG, 6400 px long side).
LARGE_IMAGE_OBJECT_ID = 436535
LARGE_IMAGE_LONG_SIDE = 6400
VARIANTS = ("small", "original")  # plus "additional-<n>" (n from 1)

_DAY_MS = 86_400_000
_DATE_START = dt.datetime(2018, 10, 17, tzinfo=dt.UTC)
_DATE_END = dt.datetime(2026, 9, 30, tzinfo=dt.UTC)


@dataclass(frozen=True)
class CollectionConfig:
    """What the synthetic collection looks like.

    Attributes:
        n_objects: Number of objects.
        seed: Everything is deterministic from (seed, object_id).
        bias: With a value (e.g. 0.9), objects tagged "Women" get a warm background tint with this
            probability and other objects with `bias_other_rate`; with None, every object gets it
            with `tint_rate`, independent of tags.
        bias_other_rate: Tint rate of objects not tagged "Women" when `bias` is set.
        tint_rate: Tint rate of all objects when `bias` is None.
        public_domain_rate: Share of public-domain objects (the others have empty image fields).
        null_tags_rate: Share of objects whose `tags` is null (no motifs).
        additional_images_rate: Share of public-domain objects with 1–3 additional images.
        id_spread: Ids are drawn without replacement from 1..n_objects*id_spread.
        large_image: Include LARGE_IMAGE_OBJECT_ID with its very large original image.
        unmarked_tags: Tags drawn and served like any other but without a motif of their own in
            the image (e.g. ("Men", "Women")): a model can find them only through what they
            correlate with, such as the planted tint.
    """

    n_objects: int = 5000
    seed: int = 0
    bias: float | None = None
    bias_other_rate: float = 0.05
    tint_rate: float = 0.10
    public_domain_rate: float = 0.8
    null_tags_rate: float = 0.08
    additional_images_rate: float = 0.2
    id_spread: float = 1.8
    large_image: bool = True
    unmarked_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class ImageSpec:
    """How an object's images are encoded."""

    fmt: str  # "JPEG" | "PNG"
    mode: str  # "RGB" | "L" | "CMYK"
    progressive: bool
    small: tuple[int, int]
    original: tuple[int, int]
    n_additional: int

    @property
    def ext(self) -> str:
        """File extension for URLs."""
        return "png" if self.fmt == "PNG" else "jpg"

    @property
    def content_type(self) -> str:
        """MIME type the server sends."""
        return "image/png" if self.fmt == "PNG" else "image/jpeg"


@functools.lru_cache(maxsize=65536)
def _image_spec(seed: int, object_id: int, additional_rate: float, large_image: bool) -> ImageSpec:
    rng = random.Random(f"spec:{seed}:{object_id}")
    fmt = "PNG" if rng.random() < 0.15 else "JPEG"
    r = rng.random()
    mode = "L" if r < 0.1 else ("CMYK" if r < 0.16 and fmt == "JPEG" else "RGB")
    progressive = fmt == "JPEG" and rng.random() < 0.15
    long_side = rng.randint(200, 400)
    aspect = rng.choice((1.0, 0.75, 0.8, 1.25, 1.33, 1.5, 0.66, 1.6))
    if aspect >= 1:
        small = (long_side, max(64, round(long_side / aspect)))
    else:
        small = (max(64, round(long_side * aspect)), long_side)
    factor = rng.choice((2, 2.5, 3, 4))
    original = (round(small[0] * factor), round(small[1] * factor))
    n_add = rng.randint(1, 3) if rng.random() < additional_rate else 0
    if object_id == LARGE_IMAGE_OBJECT_ID and large_image:
        fmt, mode, progressive = "JPEG", "RGB", False
        scale = LARGE_IMAGE_LONG_SIDE / max(small)
        original = (round(small[0] * scale), round(small[1] * scale))
    return ImageSpec(fmt, mode, progressive, small, original, n_add)


class _ByteLRU:
    """Thread-safe LRU of encoded images, bounded by total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._data: OrderedDict[Any, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key: Any) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: Any, value: bytes) -> None:
        with self._lock:
            if key in self._data:
                return
            self._data[key] = value
            self._size += len(value)
            while self._size > self.max_bytes and len(self._data) > 1:
                _, old = self._data.popitem(last=False)
                self._size -= len(old)


class SyntheticCollection:
    """Deterministic synthetic objects with Met-shaped records and learnable images.

    The collection also holds the mutable server-side state (mutations, additions, removals),
    so that a fake API and tests see the same thing.
    """

    def __init__(self, config: CollectionConfig | None = None) -> None:
        self.config = config or CollectionConfig()
        cfg = self.config
        n = max(0, int(cfg.n_objects))
        rng = np.random.default_rng(cfg.seed)
        max_id = max(int(n * cfg.id_spread), n + 10)
        ids = rng.choice(max_id, size=n, replace=False).astype(np.int64) + 1
        if cfg.large_image and n > 0 and LARGE_IMAGE_OBJECT_ID not in ids:
            ids[np.argmax(ids)] = LARGE_IMAGE_OBJECT_ID
        order = np.argsort(ids, kind="stable")
        self._ids = ids[order]
        self._cls = self._draw_classes(rng, n)[order]
        self._dept = self._draw_departments(rng, self._cls)
        self._tags = self._draw_tags(rng, n)[order]
        self._public = (rng.random(n) < cfg.public_domain_rate)[order]
        self._tint = self._draw_tint(rng, self._tags)
        span_days = (_DATE_END - _DATE_START).days
        start_ms = int(_DATE_START.timestamp() * 1000)
        days = rng.integers(0, span_days, n)
        self._mdate = (start_ms + days * _DAY_MS + rng.integers(0, _DAY_MS, n))[order]
        self._alive = np.ones(n, dtype=bool)
        if cfg.large_image and n > 0:
            self._public[self._index(LARGE_IMAGE_OBJECT_ID)] = True
        self._overrides: dict[int, dict[str, Any]] = {}
        self._image_versions: dict[int, int] = {}
        self._removed: set[int] = set()
        self.version = 0  # bumped on every change of state
        self._ids_list: list[int] | None = None
        self._images = _ByteLRU(192 * 1024 * 1024)
        self._lock = threading.Lock()

    # ----- vectorised draws -------------------------------------------------------------------
    @staticmethod
    def _draw_classes(rng: np.random.Generator, n: int) -> np.ndarray:
        p = np.array(CLASS_WEIGHTS) / sum(CLASS_WEIGHTS)
        return rng.choice(len(CLASSIFICATIONS), size=n, p=p).astype(np.uint8)

    @staticmethod
    def _department_table() -> np.ndarray:
        table = np.zeros((len(CLASSIFICATIONS), 8), dtype=np.uint8)
        for i, name in enumerate(CLASSIFICATIONS):
            depts = CLASS_VOCAB[name].departments
            table[i] = [depts[k % len(depts)] for k in range(8)]
        return table

    def _draw_departments(self, rng: np.random.Generator, cls: np.ndarray) -> np.ndarray:
        return self._department_table()[cls, rng.integers(0, 8, len(cls))]

    def _draw_tags(self, rng: np.random.Generator, n: int) -> np.ndarray:
        null = self.config.null_tags_rate
        rest = 1.0 - null
        counts = rng.choice(4, size=n, p=[null, 0.45 * rest, 0.35 * rest, 0.2 * rest])
        keys = rng.exponential(size=(n, len(TAG_VOCAB))) / np.array(TAG_WEIGHTS)
        ranks = np.argsort(np.argsort(keys, axis=1), axis=1)
        chosen = ranks < counts[:, None]
        bits = (1 << np.arange(len(TAG_VOCAB))).astype(np.int64)
        return (chosen * bits).sum(axis=1).astype(np.int64)

    def _draw_tint(self, rng: np.random.Generator, tags: np.ndarray) -> np.ndarray:
        cfg = self.config
        u = rng.random(len(tags))
        if cfg.bias is None:
            return u < cfg.tint_rate
        women = (tags & (1 << TAG_VOCAB.index("Women"))) != 0
        return u < np.where(women, cfg.bias, cfg.bias_other_rate)

    # ----- lookups --------------------------------------------------------------------------------
    def _index(self, object_id: int) -> int:
        i = int(np.searchsorted(self._ids, object_id))
        if i >= len(self._ids) or int(self._ids[i]) != object_id:
            raise KeyError(object_id)
        return i

    def __contains__(self, object_id: object) -> bool:
        try:
            return isinstance(object_id, int) and self._alive[self._index(object_id)]
        except KeyError:
            return False

    def __len__(self) -> int:
        return int(self._alive.sum())

    def exists(self, object_id: int) -> bool:
        """True if the id was ever part of the collection (removed ids included)."""
        try:
            self._index(object_id)
            return True
        except KeyError:
            return False

    def is_removed(self, object_id: int) -> bool:
        """True for ids removed (withdrawn) while running."""
        return object_id in self._removed

    @property
    def object_ids(self) -> Sequence[int]:
        """Sorted ids of the objects currently in the collection (removed ones excluded)."""
        if self._ids_list is None:
            self._ids_list = [int(i) for i in self._ids[self._alive]]
        return self._ids_list

    def tags_of(self, object_id: int) -> list[str] | None:
        """Tag terms of an object, or None when its `tags` is null."""
        mask = int(self._tags[self._index(object_id)])
        if mask == 0:
            return None
        return [t for k, t in enumerate(TAG_VOCAB) if mask & (1 << k)]

    def classification_of(self, object_id: int) -> str:
        """The object's classification."""
        return CLASSIFICATIONS[int(self._cls[self._index(object_id)])]

    def department_of(self, object_id: int) -> int:
        """The object's department id (as /departments numbers them)."""
        return int(self._dept[self._index(object_id)])

    def is_public_domain(self, object_id: int) -> bool:
        """Public-domain objects have images."""
        return bool(self._public[self._index(object_id)])

    def metadata_ms(self, object_id: int) -> int:
        """metadataDate in ms since the epoch."""
        return int(self._mdate[self._index(object_id)])

    def image_version(self, object_id: int) -> int:
        """0 until `change_image` is called for the object."""
        return self._image_versions.get(object_id, 0)

    # ----- listing ------------------------------------------------------------------------------
    def list_ids(
        self,
        metadata_date: dt.date | None = None,
        department_ids: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Ids in the listing, optionally only those updated on or after `metadata_date` (UTC)
        and only in `department_ids`. Returns a sorted int64 array."""
        mask = self._alive.copy()
        if metadata_date is not None:
            since = dt.datetime(
                metadata_date.year, metadata_date.month, metadata_date.day, tzinfo=dt.UTC
            )
            mask &= self._mdate >= int(since.timestamp() * 1000)
        if department_ids is not None:
            mask &= np.isin(self._dept, np.asarray(list(department_ids), dtype=np.int64))
        return self._ids[mask]

    def search_ids(
        self,
        q: str,
        *,
        has_images: bool | None = None,
        department_id: int | None = None,
        tags_only: bool = False,
    ) -> np.ndarray:
        """Ids whose tags (or, unless `tags_only`, classification or department) contain `q`."""
        from met_harvester.testing.vocab import OBJECT_DEPARTMENT_NAMES

        needle = q.strip().lower()
        tag_bits = sum(1 << k for k, t in enumerate(TAG_VOCAB) if needle and needle in t.lower())
        mask = (self._tags & tag_bits) != 0
        if not tags_only and needle:
            classes = [k for k, c in enumerate(CLASSIFICATIONS) if needle in c.lower()]
            depts = [d for d, name in OBJECT_DEPARTMENT_NAMES.items() if needle in name.lower()]
            mask |= np.isin(self._cls, classes) | np.isin(self._dept, depts)
        mask &= self._alive
        if has_images is not None:
            mask &= self._public == has_images
        if department_id is not None:
            mask &= self._dept == department_id
        return self._ids[mask]

    # ----- records ------------------------------------------------------------------------------
    def image_spec(self, object_id: int) -> ImageSpec:
        """Format, mode and sizes of the object's images (deterministic)."""
        cfg = self.config
        return _image_spec(cfg.seed, object_id, cfg.additional_images_rate, cfg.large_image)

    def image_urls(self, object_id: int, image_base_url: str) -> tuple[str, str, list[str]]:
        """(primaryImage, primaryImageSmall, additionalImages) on `image_base_url`."""
        spec = self.image_spec(object_id)
        base = image_base_url.rstrip("/")
        version = self.image_version(object_id)
        name = f"{object_id}.{spec.ext}" if version == 0 else f"{object_id}-v{version}.{spec.ext}"
        additional = [
            f"{base}/images/additional/{object_id}/{n}-v{version}.{spec.ext}"
            if version
            else f"{base}/images/additional/{object_id}/{n}.{spec.ext}"
            for n in range(1, spec.n_additional + 1)
        ]
        return f"{base}/images/original/{name}", f"{base}/images/small/{name}", additional

    def record(self, object_id: int, image_base_url: str) -> dict[str, Any]:
        """The Met-shaped record (57 keys, real order) of an object, with image URLs on
        `image_base_url` (e.g. "http://127.0.0.1:8080"). Raises KeyError for unknown ids."""
        i = self._index(object_id)
        rng = random.Random(self.config.seed * 1_000_003 + object_id)
        rec = build_record(
            object_id,
            rng=rng,
            classification=CLASSIFICATIONS[int(self._cls[i])],
            department_id=int(self._dept[i]),
            tags=self.tags_of(object_id),
            is_public_domain=bool(self._public[i]),
            metadata_ms=int(self._mdate[i]),
            image_urls=self.image_urls(object_id, image_base_url),
        )
        overrides = self._overrides.get(object_id)
        if overrides:
            rec.update(overrides)
        return rec

    # ----- images and truth ---------------------------------------------------------------------
    def _scene(self, object_id: int, variant: str, version: int) -> Scene:
        i = self._index(object_id)
        key = "primary" if variant in VARIANTS else variant
        rng = random.Random(f"scene:{self.config.seed}:{object_id}:{version}:{key}")
        spec = self.image_spec(object_id)
        tags = [t for t in self.tags_of(object_id) or [] if t not in self.config.unmarked_tags]
        return make_scene(
            rng, CLASSIFICATIONS[int(self._cls[i])], tags, bool(self._tint[i]), *spec.small
        )

    def _size(self, spec: ImageSpec, variant: str) -> tuple[int, int]:
        if variant == "small":
            return spec.small
        if variant == "original":
            return spec.original
        return (round(spec.small[0] * 1.5), round(spec.small[1] * 1.5))

    def image_job(
        self, object_id: int, variant: str, version: int | None = None
    ) -> tuple[tuple[int, str, int], Scene, tuple[int, int], ImageSpec]:
        """Everything needed to render one image (cheap; the rendering itself is `render_job`).

        Raises KeyError for unknown ids or variants.
        """
        spec = self.image_spec(object_id)
        self._index(object_id)
        if variant not in VARIANTS:
            n = int(variant.removeprefix("additional-")) if variant.startswith("additional-") else 0
            if not 1 <= n <= spec.n_additional:
                raise KeyError(variant)
        version = self.image_version(object_id) if version is None else version
        scene = self._scene(object_id, variant, version)
        return (object_id, variant, version), scene, self._size(spec, variant), spec

    def render_job(
        self, job: tuple[tuple[int, str, int], Scene, tuple[int, int], ImageSpec]
    ) -> tuple[bytes, str]:
        """Render and encode an `image_job` (thread-safe; cached)."""
        key, scene, size, spec = job
        data = self._images.get(key)
        if data is None:
            data = encode_image(render_scene(scene, *size), spec.fmt, spec.mode, spec.progressive)
            self._images.put(key, data)
        return data, spec.content_type

    def image_bytes(
        self, object_id: int, variant: str, version: int | None = None
    ) -> tuple[bytes, str]:
        """Encoded image of an object: variant "small", "original" or "additional-<n>" (n from 1).

        Returns (bytes, content_type). Raises KeyError for unknown ids or variants.
        """
        return self.render_job(self.image_job(object_id, variant, version))

    def truth(self, object_id: int) -> dict[str, Any]:
        """Ground truth of the primary image: tags, classification, motif boxes and tint.

        Boxes are normalised [x0, y0, x1, y1] (0..1), valid for both small and original variants.
        """
        i = self._index(object_id)
        scene = self._scene(object_id, "small", self.image_version(object_id))
        return {
            "object_id": object_id,
            "tags": self.tags_of(object_id) or [],
            "classification": CLASSIFICATIONS[int(self._cls[i])],
            "boxes": {tag: [round(c, 6) for c in box] for tag, box in scene.motifs},
            "tint": bool(self._tint[i]),
            "is_public_domain": bool(self._public[i]),
        }

    # ----- mutation -----------------------------------------------------------------------------
    def _touch(self, i: int) -> None:
        self._mdate[i] = int(time.time() * 1000)
        self.version += 1
        self._ids_list = None

    def mutate(self, object_id: int, **fields: Any) -> None:
        """Change fields of a record (new keys allowed) and bump its metadataDate to now."""
        with self._lock:
            i = self._index(object_id)
            self._overrides.setdefault(object_id, {}).update(fields)
            self._touch(i)

    def fix_quietly(self, object_id: int, **fields: Any) -> None:
        """Change fields of a record without touching its metadataDate (a server that repairs
        a record quietly: only a retry finds out)."""
        with self._lock:
            self._index(object_id)
            self._overrides.setdefault(object_id, {}).update(fields)

    def change_image(self, object_id: int) -> None:
        """Give the object new images at new URLs (bumps metadataDate)."""
        with self._lock:
            i = self._index(object_id)
            self._image_versions[object_id] = self.image_version(object_id) + 1
            self._touch(i)

    def add_object(self, object_id: int | None = None) -> int:
        """Add an object (a new id above the largest unless given); returns its id."""
        with self._lock:
            if object_id is None:
                top = int(self._ids[-1]) if len(self._ids) else 0
                object_id = top + 1 + random.Random(f"add:{self.config.seed}:{top}").randrange(40)
            if self.exists(object_id):
                raise ValueError(f"object {object_id} already exists")
            rng = np.random.default_rng([self.config.seed, object_id])
            cls = self._draw_classes(rng, 1)
            dept = self._draw_departments(rng, cls)
            tags = self._draw_tags(rng, 1)
            public = rng.random(1) < self.config.public_domain_rate
            tint = self._draw_tint(rng, tags)
            i = int(np.searchsorted(self._ids, object_id))
            self._ids = np.insert(self._ids, i, object_id)
            self._cls = np.insert(self._cls, i, cls)
            self._dept = np.insert(self._dept, i, dept)
            self._tags = np.insert(self._tags, i, tags)
            self._public = np.insert(self._public, i, public)
            self._tint = np.insert(self._tint, i, tint)
            self._mdate = np.insert(self._mdate, i, 0)
            self._alive = np.insert(self._alive, i, True)
            self._touch(i)
            return object_id

    def remove_object(self, object_id: int) -> None:
        """Withdraw an object: it leaves the listing and its record answers "Not a valid object"."""
        with self._lock:
            i = self._index(object_id)
            self._alive[i] = False
            self._removed.add(object_id)
            self.version += 1
            self._ids_list = None
