"""The mirror's objects as a trained model sees them: its label space, its split options, its
prepared cache (labelled objects) or the raw image store (everything else).

``mirror_frame`` lists the labelled objects (with the metadata the audit needs);
``mirror_images`` every object with a stored image. Both read the labelled frame the data
module builds (:attr:`MetDataModule.frame`), so there is one builder of it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from met_vision.data.labels import LabelSpaceConfig
from met_vision.data.mirror import split_options
from met_vision.data.transforms import resolve_data_config
from met_vision.inference.inputs import InputError

if TYPE_CHECKING:
    from met_vision.inference.predictor import Predictor

log = logging.getLogger("met_vision.inference.mirror")
# LabelSpaceConfig field -> the MetDataModule option it is given as
LABEL_OPTIONS = {
    "task": "task",
    "column": "label_column",
    "tag_group": "tag_group",
    "min_count": "min_count",
    "top_k": "top_k",
    "other": "other",
    "include": "include",
    "exclude": "exclude",
}


def data_options(predictor: Predictor) -> dict[str, Any]:
    """The checkpoint's data module options (for a checkpoint without them: its label space's
    and backbone's)."""
    hp = dict(predictor.datamodule_hparams)
    if not hp and predictor.label_space is not None:
        cfg = predictor.label_space.config
        hp = {
            "task": cfg.task,
            "label_column": cfg.column,
            "tag_group": cfg.tag_group,
            "top_k": cfg.top_k,
            "min_count": cfg.min_count,
            "other": cfg.other,
            "include": cfg.include,
            "exclude": cfg.exclude,
            "model_name": str(predictor.task.hparams["backbone"]),
        }
    return hp


def datamodule_for(predictor: Predictor, data_dir: str | Path) -> Any:
    """A MetDataModule with the checkpoint's data options (label space, split, image size),
    reading ``data_dir`` (which replaces the training machine's path)."""
    from met_vision.data.datamodule import MetDataModule

    known = set(MetDataModule.__init__.__code__.co_varnames)
    hp = {k: v for k, v in data_options(predictor).items() if k in known}
    hp.update(data_dir=str(data_dir), num_workers=0, persistent_workers=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return MetDataModule(**hp)


def labelled_objects(predictor: Predictor, data_dir: str | Path) -> pd.DataFrame:
    """object_id, path, target, split of the labelled objects as the checkpoint's data module
    reads them (its prepared index, else the raw image store), without building one: a
    MetDataModule imports Lightning, seconds of every predict run's start-up. The shards are
    read in place (a training job's ``stage_to`` is a node-local folder of that job)."""
    from met_vision.data.prepared_index import (
        dataset_key,
        find_index,
        read_labelled,
        with_index_targets,
    )

    hp = data_options(predictor)
    fields = LABEL_OPTIONS.items()
    config = LabelSpaceConfig(**{name: hp[option] for name, option in fields if option in hp})
    salt, fractions, group_key = split_options(hp)
    key = dataset_key(config, salt, fractions, group_key, hp.get("near_duplicates"))
    size = resolve_data_config(hp.get("model_name"), hp.get("image_size")).input_size
    root, cache_size = Path(data_dir), hp.get("cache_size")
    index = find_index(root, key, cache_size, hp.get("data_format") or "auto", size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        loaded = read_labelled(
            index,
            root,
            config,
            salt,
            fractions,
            group_key,
            cache_size or 384,
            hp.get("near_duplicates"),
        )
    return with_index_targets(loaded.frame, config.task)


def mirror_frame(predictor: Predictor, data_dir: str | Path) -> pd.DataFrame:
    """Labelled objects of the mirror as training saw them, with metadata for groups.

    Columns: object_id, path, split, target_names (list of label names), tags, artist_gender,
    constituent_genders, classification.
    """
    from met_vision.data.mirror import load_records_as_trained

    dm = datamodule_for(predictor, data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        frame = dm.frame.copy()
        names = dm.label_names
    if names != predictor.names:
        log.warning("the mirror's label space differs from the checkpoint's; matching by name")

    def to_names(target: Any) -> list[str]:
        if dm.task == "multiclass":
            return [names[int(target)]]
        return [names[int(i)] for i in target]

    frame["target_names"] = [to_names(t) for t in frame["target"]]
    records = load_records_as_trained(data_dir, dm.hparams, check_blobs=False)
    meta = records[["object_id", "tags", "artist_gender", "constituent_genders", "classification"]]
    return frame.drop(columns=["target"]).merge(meta, on="object_id", how="left")


def mirror_images(
    predictor: Predictor,
    data_dir: str | Path,
    *,
    split: str | None = None,
    object_ids: Sequence[int] | None = None,
) -> pd.DataFrame:
    """object_id, path, split of a split / ids / every object of the mirror with an image.

    Labelled objects are read from the prepared cache the model was trained on (when there is
    one); objects outside the label space (e.g. without tags) from the raw image store.

    Raises:
        InputError: when a requested object id has no stored image.
    """
    from met_vision.data.mirror import load_records_as_trained

    labelled = labelled_objects(predictor, data_dir)
    records = load_records_as_trained(data_dir, predictor.datamodule_hparams)
    records = records[records["has_image"]]
    cached = dict(zip(labelled["object_id"].astype(int), labelled["path"], strict=True))
    frame = pd.DataFrame(
        {
            "object_id": records["object_id"].astype(int),
            "path": [
                str(cached.get(int(oid), raw))
                for oid, raw in zip(records["object_id"], records["image_path"], strict=True)
            ],
            "split": records["split"],
        }
    )
    if object_ids is not None:
        known = set(int(i) for i in frame["object_id"])
        unknown = [i for i in object_ids if i not in known]
        if unknown:
            raise InputError(f"object ids {unknown[:10]} have no stored image in {data_dir}")
        order = {oid: n for n, oid in enumerate(object_ids)}
        frame = frame[frame["object_id"].isin(order)]
        frame = frame.sort_values("object_id", key=lambda s: s.map(order))
    elif split not in (None, "all"):
        frame = frame[frame["split"] == split]
    return frame.reset_index(drop=True)
