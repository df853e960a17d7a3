"""Label spaces: which labels a model predicts, built from the mirror's records.

A `LabelSpace` is saved as a `labels.json` manifest that travels with every checkpoint: the task,
the label names with their counts and sources ('api' or 'csv'), the columns they come from, the
configuration that defined them, the exclusion report and a hash of the definition.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from met_vision.data.mirror import CATEGORY_COLUMNS

OTHER = "other"
MANIFEST_VERSION = 1


@dataclass
class LabelSpaceConfig:
    """How to derive labels from the records.

    Attributes:
        task: 'multiclass' (one label per object) or 'multilabel' (tags, multi-hot).
        column: multiclass source column: classification, department, object_name, culture,
            or 'tags' together with `tag_group`.
        tag_group: multiclass from tags: exactly one of these tags must be present.
        min_count: drop labels with fewer objects.
        top_k: keep only the K most frequent labels.
        other: multiclass: objects of dropped classes go to an 'other' class instead of out.
        include: only these label values are considered.
        exclude: these label values are ignored.
    """

    task: Literal["multiclass", "multilabel"] = "multilabel"
    column: str = "classification"
    tag_group: list[str] | None = None
    min_count: int = 1
    top_k: int | None = None
    other: bool = False
    include: list[str] | None = None
    exclude: list[str] | None = None

    def __post_init__(self) -> None:
        if self.task not in ("multiclass", "multilabel"):
            raise ValueError(f"task must be 'multiclass' or 'multilabel', got {self.task!r}")
        if (
            self.task == "multiclass"
            and self.tag_group is None
            and self.column not in CATEGORY_COLUMNS
        ):
            raise ValueError(
                f"unknown label column {self.column!r}; use one of "
                f"{', '.join(CATEGORY_COLUMNS)}, or tag_group=[...] for a tag group"
            )
        if self.tag_group is not None and len(self.tag_group) < 2:
            raise ValueError("tag_group needs at least two tags")
        if self.min_count < 1:
            raise ValueError(f"min_count must be >= 1, got {self.min_count}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.other and self.task != "multiclass":
            raise ValueError("the 'other' bucket exists only for multiclass label spaces")

    @property
    def source_columns(self) -> list[str]:
        """The mirror columns the labels come from (API table first, CSV fallback second)."""
        if self.task == "multilabel" or self.tag_group is not None:
            return [
                "object_tags(source='api').tags.term",
                "object_tags(source='csv')/csv_objects.tags",
            ]
        return [f"objects.{self.column}", f"csv_objects.{self.column}"]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict with lists sorted, so equal definitions compare and hash equal."""
        data = asdict(self)
        for key in ("tag_group", "include", "exclude"):
            if data[key] is not None:
                data[key] = sorted(set(data[key]))
        if data["task"] == "multilabel" or data["tag_group"] is not None:
            data["column"] = "tags"
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LabelSpaceConfig:
        """Inverse of `to_dict` (unknown keys are an error)."""
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown label space option(s): {', '.join(sorted(unknown))}")
        data = dict(data)
        if data.get("column") == "tags":
            data["column"] = "classification"
        return cls(**data)


@dataclass
class LabelSpace:
    """The labels of one task, with the data needed to reproduce and audit them."""

    task: Literal["multiclass", "multilabel"]
    names: list[str]
    counts: dict[str, int]
    sources: dict[str, dict[str, int]]
    config: LabelSpaceConfig
    exclusions: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of labels (including 'other' when present)."""
        return len(self.names)

    @property
    def source_columns(self) -> list[str]:
        """The mirror columns the labels come from."""
        return self.config.source_columns

    @property
    def definition_hash(self) -> str:
        """SHA-256 of (task, config, names): equal hash, same meaning of every output index."""
        payload = {"task": self.task, "config": self.config.to_dict(), "names": self.names}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def index_of(self, name: str) -> int:
        """The output index of a label name."""
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(f"{name!r} is not a label of this label space") from None

    def encode_tags(self, tags: list[str]) -> list[int]:
        """Indices of the labels among `tags` (multilabel)."""
        lookup = {name: i for i, name in enumerate(self.names)}
        return sorted({lookup[t] for t in tags if t in lookup})

    def manifest(self) -> dict[str, Any]:
        """The JSON-ready manifest (what `labels.json` holds and checkpoints carry)."""
        return {
            "version": MANIFEST_VERSION,
            "task": self.task,
            "names": list(self.names),
            "num_classes": self.num_classes,
            "counts": dict(self.counts),
            "sources": {k: dict(v) for k, v in self.sources.items()},
            "source_columns": self.source_columns,
            "config": self.config.to_dict(),
            "exclusions": dict(self.exclusions),
            "definition_hash": self.definition_hash,
            **({"extra": self.extra} if self.extra else {}),
        }

    @classmethod
    def from_manifest(cls, manifest: dict[str, Any]) -> LabelSpace:
        """Rebuild a label space from `manifest()` output; the stored hash must still match."""
        space = cls(
            task=manifest["task"],
            names=list(manifest["names"]),
            counts={k: int(v) for k, v in manifest.get("counts", {}).items()},
            sources=manifest.get("sources", {}),
            config=LabelSpaceConfig.from_dict(manifest["config"]),
            exclusions=manifest.get("exclusions", {}),
            extra=manifest.get("extra", {}),
        )
        stored = manifest.get("definition_hash")
        if stored is not None and stored != space.definition_hash:
            raise ValueError("label manifest is inconsistent: its definition_hash does not match")
        return space

    def save(self, path: Path | str) -> None:
        """Write the manifest as JSON (atomically)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.manifest(), indent=2, sort_keys=True) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | str) -> LabelSpace:
        """Read a manifest written by `save`."""
        return cls.from_manifest(json.loads(Path(path).read_text()))


def _allowed(value: str, config: LabelSpaceConfig) -> bool:
    if config.include is not None and value not in config.include:
        return False
    return not (config.exclude is not None and value in config.exclude)


def _keep_names(counter: Counter[str], config: LabelSpaceConfig) -> list[str]:
    """Labels passing min_count and top_k (by count, ties by name), returned in name order."""
    ranked = sorted(
        (name for name, n in counter.items() if n >= config.min_count),
        key=lambda name: (-counter[name], name),
    )
    if config.top_k is not None:
        ranked = ranked[: config.top_k]
    return sorted(ranked)


def _multiclass_values(records: pd.DataFrame, config: LabelSpaceConfig) -> list[str | None]:
    """One raw value per record; None for no label, '\\x00ambiguous' for an ambiguous one."""
    values: list[str | None] = []
    if config.tag_group is not None:
        group = [t for t in config.tag_group if _allowed(t, config)]
        for tags in records["tags"]:
            present = sorted(set(tags) & set(group))
            values.append(None if not present else present[0] if len(present) == 1 else "\x00")
        return values
    for raw in records[config.column]:
        value = str(raw or "").strip()
        if not value or not _allowed(value, config):
            values.append(None)
        elif "|" in value:  # the Met joins several values with '|': not one class
            values.append("\x00")
        else:
            values.append(value)
    return values


def _counted(records: pd.DataFrame, vocabulary_split: str | None) -> list[bool]:
    """Which rows the vocabulary (min_count, top_k) and the manifest counts are taken from."""
    if vocabulary_split is None or "split" not in records:
        return [True] * len(records)
    return list(records["split"] == vocabulary_split)


def build_label_space(
    records: pd.DataFrame,
    config: LabelSpaceConfig,
    *,
    require_image: bool = True,
    vocabulary_split: str | None = "train",
) -> tuple[LabelSpace, pd.DataFrame]:
    """Derive the label space and the labelled records.

    Args:
        records: output of `met_vision.data.mirror.load_records`.
        config: the label space definition.
        require_image: leave out (and count) objects without a stored image.
        vocabulary_split: which labels exist (min_count, top_k) and the manifest's `counts`
            (which balanced class weights come from) are counted on this split alone, so that
            nothing about the held-out objects leaks into training; None counts every split.
            Objects of the other splits keep only labels of that vocabulary.

    Returns:
        The label space and the kept records with a `target` column (class index for
        multiclass, sorted list of label indices for multilabel).
    """
    exclusions: dict[str, int] = {"objects": len(records)}
    if "withdrawn" in records:
        exclusions["withdrawn"] = int(records["withdrawn"].sum())
        records = records[~records["withdrawn"]]
    if require_image:
        exclusions["no_image"] = int((~records["has_image"]).sum())
        records = records[records["has_image"]]
    records = records.reset_index(drop=True)
    counted = _counted(records, vocabulary_split)

    if config.task == "multiclass":
        names, targets = _multiclass_targets(records, config, counted, exclusions)
    else:
        names, targets = _multilabel_targets(records, config, counted, exclusions)

    kept = records.assign(target=pd.Series(targets, index=records.index, dtype=object))
    kept = kept[[t is not None for t in targets]].reset_index(drop=True)
    exclusions["kept"] = len(kept)
    counts, sources = _label_counts(kept, names, config.task, _counted(kept, vocabulary_split))
    if config.task == "multiclass":
        kept["target"] = kept["target"].astype("int64")
    space = LabelSpace(
        task=config.task,
        names=names,
        counts=counts,
        sources=sources,
        config=config,
        exclusions=exclusions,
    )
    return space, kept


def _multiclass_targets(
    records: pd.DataFrame, config: LabelSpaceConfig, counted: list[bool], exclusions: dict[str, int]
) -> tuple[list[str], list[Any]]:
    """Class names (vocabulary from the `counted` records) and each record's class index (None:
    no label, ambiguous or rare), counting the exclusions."""
    values = _multiclass_values(records, config)
    exclusions["no_label"] = sum(v is None for v in values)
    exclusions["ambiguous"] = sum(v == "\x00" for v in values)
    counter = Counter(
        v for v, c in zip(values, counted, strict=True) if c and v is not None and v != "\x00"
    )
    names = _keep_names(counter, config)
    kept_set = set(names)
    seen = {v for v in values if v is not None and v != "\x00"}
    if config.other and any(v not in kept_set for v in seen):
        names = [*names, OTHER] if OTHER not in kept_set else names
    lookup = {name: i for i, name in enumerate(names)}
    targets: list[Any] = []
    for value in values:
        if value is None or value == "\x00":
            targets.append(None)
        elif value in lookup:
            targets.append(lookup[value])
        else:
            targets.append(lookup[OTHER] if config.other else None)
    exclusions["rare_class"] = sum(
        t is None and v is not None and v != "\x00" for t, v in zip(targets, values, strict=True)
    )
    return names, targets


def _multilabel_targets(
    records: pd.DataFrame, config: LabelSpaceConfig, counted: list[bool], exclusions: dict[str, int]
) -> tuple[list[str], list[Any]]:
    """Label names (vocabulary from the `counted` records) and each record's sorted label
    indices (None: no tag at all), counting the unlabelled."""
    tag_lists = [[t for t in tags if _allowed(t, config)] for tags in records["tags"]]
    counter = Counter(t for tags, c in zip(tag_lists, counted, strict=True) if c for t in set(tags))
    names = _keep_names(counter, config)
    lookup = {name: i for i, name in enumerate(names)}
    targets: list[Any] = []
    for tags in records["tags"]:
        # An object without any tag is unannotated, not a negative for every label.
        targets.append(sorted({lookup[t] for t in tags if t in lookup}) if tags else None)
    exclusions["no_label"] = sum(t is None for t in targets)
    return names, targets


def _label_counts(
    kept: pd.DataFrame, names: list[str], task: str, counted: list[bool]
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Objects per label, and per label and source (`api`, `csv`), over the `counted` rows."""
    counts = dict.fromkeys(names, 0)
    sources: dict[str, dict[str, int]] = {name: {"api": 0, "csv": 0} for name in names}
    for target, source, c in zip(kept["target"], kept["source"], counted, strict=True):
        if not c:
            continue
        for index in [target] if task == "multiclass" else target:
            counts[names[index]] += 1
            sources[names[index]][source] = sources[names[index]].get(source, 0) + 1
    return counts, sources
