"""timm backbones: creation by name, offline weight files (fetch once, load), head handling and
data config."""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

log = logging.getLogger("met_vision.trainers.backbones")

_STRIP_PREFIXES = ("model.", "module.", "backbone.", "_orig_mod.")


class BackboneError(ValueError):
    """A backbone name or a weights file that cannot be used; the message says what to do."""


def check_backbone_name(name: str) -> None:
    """Raise ``BackboneError`` with close matches when timm does not know ``name``."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see timm.list_models()"
    raise BackboneError(f"unknown timm backbone {name!r}{hint}")


def classifier_prefixes(model: nn.Module) -> tuple[str, ...]:
    """State-dict key prefixes of the classifier head (e.g. ``fc.`` for ResNets)."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    names = cfg.get("classifier", "fc")
    if isinstance(names, str):
        names = (names,)
    return tuple(f"{n}." for n in names)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read weights from a ``.safetensors``, ``.pth``/``.pt``/``.bin`` or Lightning ``.ckpt`` file.

    Wrapper keys (``state_dict``, ``model``, ``state_dict_ema``) and prefixes such as
    ``model.`` or ``module.`` are removed, so a checkpoint of this project's task loads too.
    """
    path = Path(path)
    if not path.is_file():
        raise BackboneError(f"pretrained_path {str(path)!r} does not exist or is not a file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state: Any = load_file(str(path), device="cpu")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # pickle / zip errors from a wrong or damaged file
            raise BackboneError(f"cannot read weights from {str(path)!r}: {exc}") from exc
    if isinstance(state, dict):
        for key in ("state_dict", "model", "state_dict_ema", "model_state_dict"):
            if key in state and isinstance(state[key], dict):
                state = state[key]
                break
    state = _backbone_part(state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BackboneError(f"{str(path)!r} does not hold a state dict of tensors")
    cleaned: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        changed = True
        while changed:
            changed = False
            for prefix in _STRIP_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    changed = True
        cleaned[key] = value
    return cleaned


def _backbone_part(state: Any) -> Any:
    """The backbone's tensors of a ``ClassificationTask`` state dict (keys ``model.*``); the
    task's own buffers (tuned thresholds, loss weights) are not backbone weights."""
    if not isinstance(state, dict):
        return state
    if any(str(k).startswith("model.") for k in state) and not all(
        str(k).startswith("model.") for k in state
    ):
        return {k: v for k, v in state.items() if str(k).startswith("model.")}
    return state


def load_backbone_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load every non-head weight of ``model`` from ``path``; the head keeps its fresh init.

    Raises:
        BackboneError: when backbone keys are missing from the file, when the file has keys the
            backbone does not know, or when shapes differ (the lists are in the message).

    Returns:
        ``{"skipped_head": [...]}``: the head keys of the file that were not loaded.
    """
    state = read_state_dict(path)
    head = classifier_prefixes(model)
    own = model.state_dict()
    body_state = {k: v for k, v in state.items() if not k.startswith(head)}
    skipped = sorted(k for k in state if k.startswith(head))
    missing = sorted(k for k in own if not k.startswith(head) and k not in body_state)
    unexpected = sorted(k for k in body_state if k not in own)
    mismatched = sorted(
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in body_state.items()
        if k in own and v.shape != own[k].shape
    )
    if missing or unexpected or mismatched:

        def _few(keys: list[str]) -> str:
            return ", ".join(keys[:5]) + (f" (+{len(keys) - 5} more)" if len(keys) > 5 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing: {_few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected: {_few(unexpected)}")
        if mismatched:
            parts.append(f"{len(mismatched)} with other shapes: {_few(mismatched)}")
        raise BackboneError(
            f"weights in {str(path)!r} do not fit backbone {type(model).__name__}: "
            + "; ".join(parts)
        )
    model.load_state_dict(body_state, strict=False)
    log.info("loaded %d backbone tensors from %s (head replaced)", len(body_state), path)
    return {"skipped_head": skipped}


def create_backbone(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    drop_rate: float = 0.0,
    global_pool: str | None = None,
) -> nn.Module:
    """Create timm model ``name`` with a fresh ``num_classes`` head.

    Args:
        name: any ``timm.list_models()`` name.
        num_classes: outputs of the new head.
        pretrained: download ImageNet weights from timm's hub (needs network).
        pretrained_path: local weights file for offline nodes, or a directory holding
            ``<name>.safetensors`` (`python -m met_vision.weights`); wins over ``pretrained``.
        drop_rate: dropout before the classifier.
        global_pool: timm pooling (``avg``, ``max``, ``avgmax``, ...); None keeps the model's.
    """
    check_backbone_name(name)
    extra: dict[str, Any] = {} if global_pool is None else {"global_pool": global_pool}
    model = timm.create_model(
        name,
        pretrained=pretrained and pretrained_path is None,
        num_classes=num_classes,
        drop_rate=drop_rate,
        **extra,
    )
    if pretrained_path:
        if Path(pretrained_path).is_dir():
            pretrained_path = str(weights_file(pretrained_path, name))
        load_backbone_weights(model, pretrained_path)
    return model


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the classifier head's parameters."""
    head = classifier_prefixes(model)
    return {n for n, _ in model.named_parameters() if n.startswith(head)}


def data_config(model: nn.Module) -> dict[str, Any]:
    """Input size, mean, std, interpolation and crop of ``model`` (``resolve_data_config``)."""
    return dict(timm.data.resolve_data_config({}, model=model))


def weights_file(directory: Path | str, backbone: str) -> Path:
    """Where `fetch_weights` puts ``backbone``'s weights under ``directory``."""
    return Path(directory) / f"{backbone}.safetensors"


def fetch_weights(names: Sequence[str], out: Path | str, *, pretrained: bool = True) -> list[Path]:
    """Write ``<out>/<name>.safetensors`` for every timm backbone name (atomically).

    Args:
        names: timm model names (``timm.list_models()``).
        out: the directory to write (created).
        pretrained: download the published weights (False: timm's random init, for tests).
    """
    from safetensors.torch import save_file

    Path(out).mkdir(parents=True, exist_ok=True)
    written = []
    for name in names:
        check_backbone_name(name)
        model = timm.create_model(name, pretrained=pretrained)
        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        target = weights_file(out, name)
        partial = target.with_name(target.name + ".partial")
        save_file(state, str(partial), metadata={"timm_model": name, "pretrained": str(pretrained)})
        os.replace(partial, target)
        written.append(target)
    return written
