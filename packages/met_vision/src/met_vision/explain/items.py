"""The images `explain` explains: objects of the mirror (by id or split) or image files."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from met_vision.inference.predictor import InputError, LoadedModel


@dataclass
class Item:
    """One image to explain."""

    key: str  # object id or file stem
    path: str
    title: str
    object_id: int | None = None


def mirror_items(
    loaded: LoadedModel, data_dir: str, object_ids: Sequence[int] | None, split: str | None
) -> list[Item]:
    """Items for object ids (or a whole split) of the mirror, with their titles."""
    from met_vision.data.mirror import connect_ro
    from met_vision.inference.mirror import mirror_frame

    frame = mirror_frame(loaded, data_dir)
    if object_ids is not None:
        known = set(frame["object_id"].astype(int))
        unknown = [i for i in object_ids if i not in known]
        if unknown:
            raise InputError(
                f"object ids {unknown[:10]} are not labelled objects with an image in {data_dir}"
            )
        order = {oid: i for i, oid in enumerate(object_ids)}
        frame = frame[frame["object_id"].isin(order)]
        frame = frame.assign(_order=frame["object_id"].map(order)).sort_values("_order")
    elif split is not None:
        frame = frame[frame["split"] == split] if split != "all" else frame
    conn = connect_ro(data_dir)
    try:
        titles = dict(conn.execute("SELECT object_id, COALESCE(title, '') FROM objects").fetchall())
    finally:
        conn.close()
    return [
        Item(str(oid), str(path), str(titles.get(int(oid), "")) or f"object {oid}", int(oid))
        for oid, path in zip(frame["object_id"], frame["path"], strict=True)
    ]


def file_items(paths: Sequence[str]) -> list[Item]:
    """Items for image files (missing files are an error)."""
    missing = [p for p in paths if not Path(p).is_file()]
    if missing:
        raise InputError(f"image file(s) not found: {', '.join(missing[:5])}")
    items = []
    for p in paths:
        stem = Path(p).stem
        items.append(Item(stem, str(p), Path(p).name, int(stem) if stem.isdigit() else None))
    return items
