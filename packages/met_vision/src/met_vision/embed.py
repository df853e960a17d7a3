"""`python -m met_vision.embed`: penultimate-layer embeddings, k-means clusters, similar objects.

    python -m met_vision.embed --ckpt best.ckpt --data-dir data --out emb/ --clusters 8
    python -m met_vision.embed similar --index emb/ --object-id 123 -k 10

The first writes ``embeddings.npy`` (float32, one L2-normalised row per object: the backbone's
pooled features before the classifier), ``index.parquet`` (row -> object_id, image, split,
cluster), ``meta.json`` and, with ``--clusters K``, ``clusters.json`` and one
``montages/cluster_<k>.png`` per cluster (the images nearest its centre). The second prints the
nearest neighbours of an object by cosine similarity. Images are decoded by ``--num-workers``
DataLoader workers and embedded on ``--device`` (``--devices N``: one process per device),
chunk by chunk into ``<out>/parts/``, so a killed run resumes when started again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from met_vision.inference import runner
from met_vision.inference.options import add_inference_options
from met_vision.inference.predictor import InputError, Predictor, load_model

PROG = "met_vision.embed"
MONTAGE_MAX = 16
THUMB = 96


def normalize_rows(matrix: np.ndarray) -> np.ndarray:
    """L2-normalise rows (zero rows stay zero)."""
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return (matrix / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def compute_embeddings(
    loaded: Predictor,
    paths: Sequence[str],
    parts: Path,
    spec: runner.RunSpec | None = None,
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(ok_mask, L2-normalised embeddings of the readable images, errors)``, computed chunk
    by chunk into ``parts`` (a killed run resumes there) on the spec's device(s)."""
    spec = spec or runner.RunSpec(ckpt=str(loaded.ckpt_path), output="features")
    one = spec.devices == 1
    ok, matrix, errors, _ = runner.run(spec, loaded.model_id, paths, parts, loaded if one else None)
    return ok, normalize_rows(matrix), errors


def cluster(embeddings: np.ndarray, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """k-means labels ``(N,)`` and centres ``(k, D)`` (k is capped at N)."""
    from sklearn.cluster import KMeans

    k = max(1, min(k, len(embeddings)))
    model = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(embeddings)
    return model.labels_.astype(np.int64), model.cluster_centers_.astype(np.float32)


def montage(paths: Sequence[str], out: Path, title: str, thumb: int = THUMB) -> None:
    """A square grid of thumbnails with a title bar, as PNG."""
    from PIL import ImageDraw

    cols = max(1, int(np.ceil(np.sqrt(len(paths)))))
    rows = max(1, int(np.ceil(len(paths) / cols)))
    bar = 18
    sheet = Image.new("RGB", (cols * thumb, rows * thumb + bar), (255, 255, 255))
    ImageDraw.Draw(sheet).text((4, 3), title, fill=(0, 0, 0))
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                tile = image.convert("RGB")
                tile.thumbnail((thumb, thumb))
        except OSError:
            continue
        x, y = (i % cols) * thumb, (i // cols) * thumb + bar
        sheet.paste(tile, (x + (thumb - tile.width) // 2, y + (thumb - tile.height) // 2))
    sheet.save(out)


def write_clusters(
    embeddings: np.ndarray, index: pd.DataFrame, out: Path, clusters: int, seed: int
) -> int:
    """Cluster the embeddings (``index["cluster"]``), write a montage of each cluster's images
    nearest its centre and ``clusters.json``; returns the number of clusters."""
    labels, centres = cluster(embeddings, clusters, seed)
    index["cluster"] = labels
    (out / "montages").mkdir(exist_ok=True)
    summary = []
    for c in range(len(centres)):
        members = np.flatnonzero(labels == c)
        distance = np.linalg.norm(embeddings[members] - centres[c], axis=1)
        nearest = members[np.argsort(distance)[:MONTAGE_MAX]]
        name = f"montages/cluster_{c:02d}.png"
        montage(
            [index["image"][i] for i in nearest],
            out / name,
            f"cluster {c}: {len(members)} objects",
        )
        summary.append(
            {
                "cluster": c,
                "size": len(members),
                "montage": name,
                "examples": [int(index["object_id"][i]) for i in nearest],
            }
        )
    (out / "clusters.json").write_text(json.dumps(summary, indent=2) + "\n")
    return len(centres)


def write_index(
    loaded: Predictor,
    out: Path,
    object_ids: Sequence[int],
    paths: Sequence[str],
    splits: Sequence[str],
    *,
    clusters: int | None = None,
    spec: runner.RunSpec | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Embed the images and write the index directory; returns meta.json's content."""
    out.mkdir(parents=True, exist_ok=True)
    ok, embeddings, errors = compute_embeddings(loaded, paths, out / "parts", spec)
    keep = np.flatnonzero(ok)
    index = pd.DataFrame(
        {
            "row": np.arange(len(keep)),
            "object_id": [int(object_ids[int(i)]) for i in keep],
            "image": [str(paths[int(i)]) for i in keep],
            "split": [str(splits[int(i)]) for i in keep],
        }
    )
    np.save(out / "embeddings.npy", embeddings)
    meta: dict[str, Any] = {
        "model_id": loaded.model_id,
        "label_manifest_hash": loaded.manifest_hash,
        "checkpoint": str(loaded.ckpt_path),
        "count": len(index),
        "dim": int(embeddings.shape[1]) if embeddings.ndim == 2 else 0,
        "normalised": "l2",
        "errors": errors,
    }
    if clusters and len(index):
        meta["clusters"] = write_clusters(embeddings, index, out, clusters, seed)
    index.to_parquet(out / "index.parquet", index=False)
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    shutil.rmtree(out / "parts", ignore_errors=True)
    return meta


def similar(index_dir: str | Path, object_id: int, k: int = 10) -> pd.DataFrame:
    """The ``k`` nearest objects to ``object_id`` by cosine similarity (itself excluded).

    Raises:
        InputError: when the index is missing or does not hold the object.
    """
    directory = Path(index_dir)
    if not (directory / "embeddings.npy").is_file() or not (directory / "index.parquet").is_file():
        raise InputError(f"{directory} is not an embedding index (run `python -m {PROG}` first)")
    embeddings = np.load(directory / "embeddings.npy")
    index = pd.read_parquet(directory / "index.parquet")
    rows = np.flatnonzero(index["object_id"].to_numpy() == object_id)
    if not len(rows):
        raise InputError(f"object {object_id} is not in the embedding index {directory}")
    query = embeddings[rows[0]]
    scores = embeddings @ query
    scores[rows] = -np.inf
    order = np.argsort(-scores)[: max(0, min(k, len(index) - len(rows)))]
    result = index.iloc[order][["object_id", "image"]].copy()
    result.insert(1, "similarity", scores[order].astype(float))
    return result.reset_index(drop=True)


def _similar_main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog=f"{PROG} similar", description="Nearest neighbours of an object."
    )
    parser.add_argument("--index", required=True, help="directory written by the embed command")
    parser.add_argument("--object-id", required=True, type=int)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)
    try:
        result = similar(args.index, args.object_id, args.k)
    except InputError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result.to_dict(orient="records")))
    else:
        print(result.to_string(index=False))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point (``similar`` as first argument runs the lookup); 2 on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "similar":
        return _similar_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog=PROG, description="Embeddings and clusters of the mirror."
    )
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--split", default="all", choices=("train", "val", "test", "all"))
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--clusters", type=int, help="k-means with K clusters and montages")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    add_inference_options(parser, multi_device=True)
    args = parser.parse_args(argv)
    if args.clusters is not None and args.clusters < 1:
        parser.error("--clusters must be at least 1")
    try:
        from met_vision.inference.mirror import mirror_frame

        one = args.devices <= 1
        loaded = load_model(args.ckpt, args.device if one else "cpu")
        frame = mirror_frame(loaded, args.data_dir)
        spec = runner.RunSpec(
            ckpt=str(args.ckpt),
            output="features",
            device=args.device,
            devices=max(1, args.devices),
            num_workers=args.num_workers,
            batch_size=args.batch_size,
            chunk_size=max(1, args.chunk_size),
        )
        if args.split != "all":
            frame = frame[frame["split"] == args.split]
        meta = write_index(
            loaded,
            args.out,
            [int(i) for i in frame["object_id"]],
            [str(p) for p in frame["path"]],
            [str(s) for s in frame["split"]],
            clusters=args.clusters,
            spec=spec,
            seed=args.seed,
        )
    except (InputError, FileNotFoundError, ValueError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    for error in meta["errors"]:
        print(f"{PROG}: warning: {error}", file=sys.stderr)
    print(f"{meta['count']} embeddings ({meta['dim']}-d) in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
