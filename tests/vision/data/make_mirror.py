"""Make a tiny, real met_harvester mirror for met_vision tests (seeded, deterministic).

Writes `<out>/met.sqlite` (through `met_harvester.db.connect_sync`, plain SQL inserts), image
blobs at `<out>/images/<2>/<2>/<sha256>` rendered by `met_harvester.testing.SyntheticCollection`,
and `<out>/truth.json` (per-object ground truth and the ids of the special cases).

About 8% of the objects exist only in the imported CSV (`csv_objects`, tags with source 'csv'), and
some API objects also have a stale CSV row (classification 'Stale CSV value') that must lose to
the API. Special inputs for `prepare`: a CMYK JPEG, a grayscale JPEG, a palette PNG with
transparency, a huge 6000x4000 JPEG, a truncated JPEG, an image row whose blob is missing, a
pending image and a withdrawn object.

    python tests/vision/data/make_mirror.py OUT --objects 300 [--seed 0] [--bias 0.9]
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import sys
from pathlib import Path
from typing import Any

from PIL import Image

from met_harvester.db import connect_sync
from met_harvester.testing.collection import CollectionConfig, SyntheticCollection

IMAGE_BASE_URL = "http://127.0.0.1:9"
NOW = "2026-11-01T00:00:00.000Z"
STALE_CSV_CLASSIFICATION = "Stale CSV value"
SPECIAL_KINDS = (
    "cmyk",
    "gray",
    "palette_alpha",
    "huge",
    "truncated",
    "missing_blob",
    "pending",
    "withdrawn",
)
HUGE_SIZE = (6000, 4000)

_OBJECT_FIELDS = {
    "department": "department",
    "classification": "classification",
    "object_name": "objectName",
    "title": "title",
    "culture": "culture",
    "period": "period",
    "artist_display_name": "artistDisplayName",
    "artist_gender": "artistGender",
    "object_begin_date": "objectBeginDate",
    "object_end_date": "objectEndDate",
    "accession_year": "accessionYear",
    "accession_number": "accessionNumber",
}


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _special_bytes(kind: str, rgb: Image.Image) -> tuple[bytes, str]:
    """(bytes, variant note) of one special input made from the object's rendered image."""
    if kind == "cmyk":
        return _encode(rgb.convert("CMYK"), "JPEG", quality=90), "CMYK JPEG"
    if kind == "gray":
        return _encode(rgb.convert("L"), "JPEG", quality=90), "grayscale JPEG"
    if kind == "palette_alpha":
        rgba = rgb.convert("RGBA")
        alpha = Image.new("L", rgba.size, 255)
        alpha.paste(0, (0, 0, rgba.width // 4, rgba.height))  # a transparent left strip
        rgba.putalpha(alpha)
        palette = rgba.convert("P", palette=Image.Palette.ADAPTIVE, colors=255)
        palette.info["transparency"] = 0
        mask = Image.eval(alpha, lambda a: 255 if a == 0 else 0)
        palette.paste(0, mask=mask)
        return _encode(palette, "PNG", transparency=0), "palette PNG with transparency"
    if kind == "huge":
        return _encode(
            rgb.resize(HUGE_SIZE, Image.Resampling.BILINEAR), "JPEG", quality=85
        ), "6000x4000 JPEG"
    if kind == "truncated":
        data = _encode(rgb, "JPEG", quality=90)
        return data[: len(data) // 2], "truncated JPEG"
    raise ValueError(kind)


def _write_blob(out_dir: Path, data: bytes) -> str:
    sha = hashlib.sha256(data).hexdigest()
    path = out_dir / "images" / sha[:2] / sha[2:4] / sha
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_bytes(data)
    return sha


def _tag_id(conn: Any, tag: dict[str, Any], cache: dict[str, int]) -> int:
    term = tag["term"]
    if term not in cache:
        cur = conn.execute(
            "INSERT INTO tags(term, aat_url, wikidata_url) VALUES (?, ?, ?)",
            (term, tag.get("AAT_URL"), tag.get("Wikidata_URL")),
        )
        cache[term] = int(cur.lastrowid)
    return cache[term]


def _insert_object(conn: Any, record: dict[str, Any], withdrawn: bool) -> None:
    raw = json.dumps(record)
    values = {column: record.get(key) for column, key in _OBJECT_FIELDS.items()}
    conn.execute(
        "INSERT INTO objects(object_id, raw_json, content_sha256, metadata_date, first_seen_at, "
        "fetched_at, withdrawn_at, is_public_domain, is_highlight, primary_image, "
        "primary_image_small, additional_images, "
        + ", ".join(values)
        + ") VALUES ("
        + ", ".join("?" * (12 + len(values)))
        + ")",
        (
            record["objectID"],
            raw,
            hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest(),
            record.get("metadataDate"),
            NOW,
            NOW,
            NOW if withdrawn else None,
            int(bool(record.get("isPublicDomain"))),
            int(bool(record.get("isHighlight"))),
            record.get("primaryImage"),
            record.get("primaryImageSmall"),
            json.dumps(record.get("additionalImages") or []),
            *values.values(),
        ),
    )
    for position, person in enumerate(record.get("constituents") or []):
        conn.execute(
            "INSERT OR IGNORE INTO constituents(constituent_id, name, ulan_url, wikidata_url, gender) "
            "VALUES (?, ?, ?, ?, ?)",
            (
                person["constituentID"],
                person.get("name"),
                person.get("constituentULAN_URL"),
                person.get("constituentWikidata_URL"),
                person.get("gender"),
            ),
        )
        conn.execute(
            "INSERT INTO object_constituents(object_id, constituent_id, role, position) VALUES (?, ?, ?, ?)",
            (record["objectID"], person["constituentID"], person.get("role") or "", position),
        )


def _insert_csv_row(conn: Any, record: dict[str, Any], classification: str) -> None:
    terms = [t["term"] for t in record.get("tags") or []]
    row = {
        "Object ID": str(record["objectID"]),
        "Classification": classification,
        "Tags": "|".join(terms),
    }
    values = {column: record.get(key) for column, key in _OBJECT_FIELDS.items()}
    values["classification"] = classification
    conn.execute(
        "INSERT INTO csv_objects(object_id, raw_row, row_sha256, metadata_date, first_seen_at, "
        "imported_at, source_file, is_public_domain, is_highlight, tags, "
        + ", ".join(values)
        + ") VALUES ("
        + ", ".join("?" * (10 + len(values)))
        + ")",
        (
            record["objectID"],
            json.dumps(row),
            hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest(),
            None,
            NOW,
            NOW,
            "MetObjects.csv",
            int(bool(record.get("isPublicDomain"))),
            0,
            json.dumps(terms),
            *values.values(),
        ),
    )


def make_mirror(
    out_dir: Path | str,
    n_objects: int = 300,
    seed: int = 0,
    bias: float | None = None,
    size: str = "small",
    specials: bool = True,
    csv_only_rate: float = 0.08,
    unmarked_tags: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Write a mirror of `n_objects` synthetic objects to `out_dir`; returns the truth dict.

    Args:
        out_dir: the data dir to create (must not hold a met.sqlite yet).
        n_objects: objects in the collection (about 80% public domain, with an image).
        seed: the collection's seed.
        bias: planted "Women" -> warm tint correlation (see CollectionConfig.bias).
        size: image variant stored: 'small' (200–400 px) or 'original' (2–4x larger).
        specials: replace a few images with the special inputs (CMYK, gray, palette+alpha,
            huge, truncated, missing blob, pending) and withdraw one object.
        csv_only_rate: share of objects known only from the CSV.
        unmarked_tags: tags without a motif of their own (see CollectionConfig.unmarked_tags).
    """
    out_dir = Path(out_dir)
    if (out_dir / "met.sqlite").exists():
        raise FileExistsError(f"{out_dir / 'met.sqlite'} exists; choose an empty directory")
    collection = SyntheticCollection(
        CollectionConfig(n_objects=n_objects, seed=seed, bias=bias, unmarked_tags=unmarked_tags)
    )
    rng = random.Random(f"mirror:{seed}")
    ids = list(collection.object_ids)
    public = [oid for oid in ids if collection.is_public_domain(oid)]
    special_of: dict[int, str] = {}
    if specials and len(public) >= 4 * len(SPECIAL_KINDS):
        chosen = rng.sample(public, len(SPECIAL_KINDS))
        special_of = dict(zip(chosen, SPECIAL_KINDS, strict=True))
    conn = connect_sync(out_dir)
    tag_cache: dict[str, int] = {}
    truth: dict[str, Any] = {
        "config": {
            "n_objects": n_objects,
            "seed": seed,
            "bias": bias,
            "size": size,
            "unmarked_tags": list(unmarked_tags),
        },
        "objects": {},
        "specials": {kind: oid for oid, kind in special_of.items()},
        "csv_only": [],
        "stale_csv": [],
    }
    with conn:
        for oid in ids:
            record = collection.record(oid, IMAGE_BASE_URL)
            kind = special_of.get(oid)
            draw = rng.random()
            csv_only = draw < csv_only_rate and kind is None
            source = "csv" if csv_only else "api"
            tags = record.get("tags") or []
            if csv_only:
                _insert_csv_row(conn, record, record["classification"])
                truth["csv_only"].append(oid)
            else:
                _insert_object(conn, record, withdrawn=kind == "withdrawn")
                if draw > 1 - csv_only_rate:
                    _insert_csv_row(conn, record, STALE_CSV_CLASSIFICATION)
                    truth["stale_csv"].append(oid)
            for tag in tags:
                conn.execute(
                    "INSERT INTO object_tags(object_id, tag_id, source) VALUES (?, ?, ?)",
                    (oid, _tag_id(conn, tag, tag_cache), source),
                )
            has_image = False
            if collection.is_public_domain(oid):
                data, _ = collection.image_bytes(oid, size)
                status = "pending" if kind == "pending" else "ok"
                if kind in ("cmyk", "gray", "palette_alpha", "huge", "truncated"):
                    with Image.open(io.BytesIO(data)) as rendered:
                        data, _note = _special_bytes(kind, rendered.convert("RGB"))
                if kind == "missing_blob":
                    sha = hashlib.sha256(data).hexdigest()
                elif status == "ok":
                    sha = _write_blob(out_dir, data)
                else:
                    sha = None
                width = height = fmt = mode = None
                if kind != "truncated":
                    with Image.open(io.BytesIO(data)) as probe:
                        width, height, fmt, mode = (
                            probe.width,
                            probe.height,
                            probe.format,
                            probe.mode,
                        )
                url = record["primaryImage"] if size == "original" else record["primaryImageSmall"]
                conn.execute(
                    "INSERT INTO images(object_id, role, position, variant, url, sha256, bytes, width, "
                    "height, format, mode, fetched_at, status, attempts) "
                    "VALUES (?, 'primary', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1)",
                    (oid, size, url, sha, len(data), width, height, fmt, mode, NOW, status),
                )
                has_image = status == "ok" and kind not in ("missing_blob", "withdrawn")
            truth["objects"][str(oid)] = {
                **collection.truth(oid),
                "source": source,
                "has_image": has_image,
                "special": kind,
            }
    conn.close()
    (out_dir / "truth.json").write_text(json.dumps(truth, indent=1, sort_keys=True))
    return truth


def main(argv: list[str] | None = None) -> int:
    """Command line: `python tests/vision/data/make_mirror.py OUT --objects 300`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bias", type=float, default=None)
    parser.add_argument("--size", choices=("small", "original"), default="small")
    parser.add_argument("--no-specials", action="store_true")
    args = parser.parse_args(argv)
    try:
        truth = make_mirror(
            args.out, args.objects, args.seed, args.bias, args.size, specials=not args.no_specials
        )
    except FileExistsError as exc:
        print(f"make_mirror: error: {exc}", file=sys.stderr)
        return 2
    with_image = sum(1 for o in truth["objects"].values() if o["has_image"])
    print(f"wrote {len(truth['objects'])} objects ({with_image} with images) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
