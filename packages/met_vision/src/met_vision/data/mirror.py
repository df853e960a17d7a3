"""Read-only access to a met_harvester mirror: one row per object with its metadata and image.

The harvester's SQLite file (`<data-dir>/met.sqlite`) is opened read-only (`mode=ro`, or
`immutable=1` on a read-only mount: `met_vision.data.readonly`), so nothing here can alter harvested
data. Metadata comes from the API mirror (`objects`, `object_tags` source 'api')
where an object has been fetched, and from the imported Open Access CSV (`csv_objects`,
`object_tags` source 'csv') otherwise; the `source` column says which.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from met_vision.data.readonly import connect_readonly
from met_vision.data.splits import assign_splits, check_fractions

DB_FILENAME = "met.sqlite"
CATEGORY_COLUMNS: tuple[str, ...] = ("classification", "department", "object_name", "culture")
_META_COLUMNS = (
    "object_id",
    "department",
    "classification",
    "object_name",
    "culture",
    "artist_display_name",
    "artist_gender",
    "accession_number",
)
# Which stored image stands for an object: its current primary image, the original when
# it was downloaded, else the small (web) variant.
_VARIANT_PREFERENCE = {"original": 0, "small": 1}


def connect_ro(data_dir: Path | str) -> sqlite3.Connection:
    """Open `<data-dir>/met.sqlite` read-only, also on a read-only mount (`met_vision.data.readonly`).

    Raises:
        FileNotFoundError: when the data dir holds no mirror.
    """
    path = Path(data_dir) / DB_FILENAME
    if not path.is_file():
        raise FileNotFoundError(
            f"no mirror database at {path}; run `met-harvester sync --data-dir {data_dir}` first"
        )
    return connect_readonly(path)


def blob_path(data_dir: Path | str, sha256: str) -> Path:
    """Where the harvester stores the image blob with this SHA-256."""
    return Path(data_dir) / "images" / sha256[:2] / sha256[2:4] / sha256


def _read_objects(conn: sqlite3.Connection, include_withdrawn: bool) -> pd.DataFrame:
    columns = ", ".join(_META_COLUMNS)
    api = pd.read_sql_query(f"SELECT {columns}, withdrawn_at FROM objects", conn)
    api["source"] = "api"
    csv = pd.read_sql_query(
        f"SELECT {columns}, tags AS csv_tags FROM csv_objects "
        "WHERE object_id NOT IN (SELECT object_id FROM objects)",
        conn,
    )
    csv["source"] = "csv"
    csv["withdrawn_at"] = None
    frame = pd.concat([api, csv], ignore_index=True)
    frame["withdrawn"] = frame["withdrawn_at"].notna()
    if not include_withdrawn:
        frame = frame[~frame["withdrawn"]]
    return frame.drop(columns=["withdrawn_at"]).reset_index(drop=True)


def _read_tags(conn: sqlite3.Connection) -> dict[tuple[int, str], list[str]]:
    tags: dict[tuple[int, str], list[str]] = defaultdict(list)
    query = (
        "SELECT ot.object_id, ot.source, t.term FROM object_tags ot "
        "JOIN tags t ON t.tag_id = ot.tag_id ORDER BY ot.object_id, t.term"
    )
    for object_id, source, term in conn.execute(query):
        tags[(object_id, source)].append(term)
    return tags


def _parse_csv_tags(cell: object) -> list[str]:
    """Terms of csv_objects.tags (a JSON array; tolerate the CSV's raw pipe-joined form)."""
    if not isinstance(cell, str) or not cell.strip():
        return []
    try:
        value = json.loads(cell)
    except json.JSONDecodeError:
        value = cell.split("|")
    if isinstance(value, str):
        value = value.split("|")
    if not isinstance(value, list):
        return []
    return [str(term).strip() for term in value if str(term).strip()]


def _read_constituent_genders(conn: sqlite3.Connection) -> dict[int, list[str]]:
    genders: dict[int, list[str]] = defaultdict(list)
    query = (
        "SELECT oc.object_id, COALESCE(c.gender, '') FROM object_constituents oc "
        "LEFT JOIN constituents c ON c.constituent_id = oc.constituent_id "
        "ORDER BY oc.object_id, oc.position"
    )
    for object_id, gender in conn.execute(query):
        genders[object_id].append(str(gender).strip())
    return genders


def _read_images(conn: sqlite3.Connection) -> dict[int, tuple[str, str]]:
    """object_id -> (sha256, variant) of the preferred current, downloaded primary image."""
    best: dict[int, tuple[int, str, str]] = {}
    query = (
        "SELECT object_id, variant, sha256 FROM images WHERE status = 'ok' AND is_current = 1 "
        "AND role = 'primary' AND sha256 IS NOT NULL"
    )
    for object_id, variant, sha in conn.execute(query):
        rank = _VARIANT_PREFERENCE.get(variant, 9)
        if object_id not in best or rank < best[object_id][0]:
            best[object_id] = (rank, sha, variant)
    return {oid: (sha, variant) for oid, (_, sha, variant) in best.items()}


def _read_all_image_shas(conn: sqlite3.Connection) -> dict[int, list[str]]:
    """object_id -> every stored image sha256 of the object (any role or variant), for leak checks."""
    shas: dict[int, set[str]] = defaultdict(set)
    query = "SELECT object_id, sha256 FROM images WHERE status = 'ok' AND sha256 IS NOT NULL"
    for object_id, sha in conn.execute(query):
        shas[object_id].add(sha)
    return {oid: sorted(values) for oid, values in shas.items()}


def _object_tags(frame: pd.DataFrame, tags: dict[tuple[int, str], list[str]]) -> list[list[str]]:
    """Each object's tag terms; a CSV object's also from its `csv_tags` cell."""
    object_tags: list[list[str]] = []
    csv_cells = frame["csv_tags"] if "csv_tags" in frame else pd.Series(None, index=frame.index)
    for object_id, source, cell in zip(frame["object_id"], frame["source"], csv_cells, strict=True):
        terms = list(tags.get((object_id, source), []))
        if source == "csv":
            terms = sorted(set(terms) | set(_parse_csv_tags(cell)))
        object_tags.append(terms)
    return object_tags


def _add_image_columns(
    frame: pd.DataFrame, images: dict[int, tuple[str, str]], data_dir: Path, check_blobs: bool
) -> None:
    """`image_sha256`, `image_variant`, `image_path` (None when the blob is missing and
    `check_blobs`) and `has_image` of each object's chosen image."""
    shas, variants, paths = [], [], []
    for object_id in frame["object_id"]:
        found = images.get(object_id)
        path = blob_path(data_dir, found[0]).resolve() if found else None
        if path is not None and check_blobs and not path.is_file():
            found, path = None, None
        shas.append(found[0] if found else None)
        variants.append(found[1] if found else None)
        paths.append(str(path) if path is not None else None)
    frame["image_sha256"] = shas
    frame["image_variant"] = variants
    frame["image_path"] = paths
    frame["has_image"] = frame["image_path"].notna()


def load_records(
    data_dir: Path | str,
    *,
    include_withdrawn: bool = False,
    check_blobs: bool = True,
    split_salt: str = "met",
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    group_key: str | None = None,
) -> pd.DataFrame:
    """Every object of the mirror as one row (objects with and without an image).

    Columns: object_id, source ('api' | 'csv'), department, classification, object_name, culture,
    artist_display_name, artist_gender, accession_number, withdrawn, tags (list of terms),
    constituent_genders (list, one per constituent, '' when unknown), image_sha256, image_variant,
    image_path (absolute path of the blob, None without one), has_image, image_sha256s (every
    stored image of the object), split (objects sharing any image land in one split, see
    `met_vision.data.splits`).

    Args:
        data_dir: the harvester's data dir (holds met.sqlite and images/).
        include_withdrawn: keep objects that left the API listing (default: drop them).
        check_blobs: treat an image whose blob file is missing as no image.
        split_salt: salt of the split hash (see `met_vision.data.splits`).
        split_fractions: train/val/test fractions.
        group_key: None, 'artist' or 'accession_prefix'.
    """
    conn = connect_ro(data_dir)
    try:
        frame = _read_objects(conn, include_withdrawn)
        tags = _read_tags(conn)
        genders = _read_constituent_genders(conn)
        images = _read_images(conn)
        all_shas = _read_all_image_shas(conn)
    finally:
        conn.close()

    frame["tags"] = _object_tags(frame, tags)
    frame = frame.drop(columns=["csv_tags"], errors="ignore")
    frame["constituent_genders"] = [genders.get(oid, []) for oid in frame["object_id"]]
    for column in (*CATEGORY_COLUMNS, "artist_display_name", "artist_gender", "accession_number"):
        frame[column] = frame[column].fillna("").astype(str).str.strip()
    _add_image_columns(frame, images, Path(data_dir), check_blobs)
    frame["image_sha256s"] = [all_shas.get(oid, []) for oid in frame["object_id"]]
    frame["split"] = assign_splits(
        frame, salt=split_salt, fractions=split_fractions, group_key=group_key
    )
    return frame.sort_values("object_id").reset_index(drop=True)


def load_records_as_trained(
    data_dir: Path | str, datamodule_hparams: Mapping[str, Any], *, check_blobs: bool = True
) -> pd.DataFrame:
    """`load_records` with the split settings (salt, fractions, group key) of a data module's
    hyperparameters, so that the `split` column matches the one the model was trained on."""
    salt, fractions, group_key = split_options(datamodule_hparams)
    return load_records(
        data_dir,
        check_blobs=check_blobs,
        split_salt=salt,
        split_fractions=fractions,
        group_key=group_key,
    )


def split_options(
    datamodule_hparams: Mapping[str, Any],
) -> tuple[str, tuple[float, float, float], str | None]:
    """(salt, fractions, group key) of the split a data module's hyperparameters describe
    (MetDataModule's defaults where they say nothing)."""
    fractions = check_fractions(datamodule_hparams.get("split_fractions", (0.8, 0.1, 0.1)))
    return (
        datamodule_hparams.get("split_salt", "met"),
        fractions,
        datamodule_hparams.get("group_key"),
    )
