"""Class activation maps with pytorch-grad-cam, with the target layer resolved per backbone.

Families handled by name: timm ResNets (``layer4[-1]``), Inception-ResNet-v2 (``conv2d_7b``),
ConvNeXt (``stages[-1]``), EfficientNet (``bn2``, the activated head conv) and ViT
(``blocks[-1].norm1`` with a reshape transform from tokens to a grid). Anything else falls back
to the last module of timm's ``feature_info`` or, failing that, the last module that produced a
4-D activation in a probe forward pass.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
from pytorch_grad_cam.base_cam import BaseCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

log = logging.getLogger("met_vision.explain.cam")

METHODS: dict[str, type[BaseCAM]] = {
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "scorecam": ScoreCAM,
    "eigencam": EigenCAM,
    "layercam": LayerCAM,
}

ReshapeTransform = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class TargetLayer:
    """The layer CAMs are computed on, its dotted name, and an optional reshape transform."""

    module: nn.Module
    name: str
    family: str
    reshape_transform: ReshapeTransform | None = None


def _vit_reshape(model: nn.Module) -> ReshapeTransform:
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    patch_embed = getattr(model, "patch_embed", None)
    grid = tuple(getattr(patch_embed, "grid_size", ()) or ())

    def reshape(tokens: torch.Tensor) -> torch.Tensor:
        patches = tokens[:, prefix:, :]
        count = patches.shape[1]
        if len(grid) == 2 and grid[0] * grid[1] == count:
            height, width = int(grid[0]), int(grid[1])
        else:
            height = width = math.isqrt(count)
            if height * width != count:
                raise ValueError(f"cannot reshape {count} ViT tokens into a square grid")
        return patches.reshape(tokens.shape[0], height, width, tokens.shape[2]).permute(0, 3, 1, 2)

    return reshape


def backbone_of(model: nn.Module) -> nn.Module:
    """The timm network inside a LightningModule (``.model``/``.backbone``/``.net``) or itself."""
    for attr in ("model", "backbone", "net"):
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module) and hasattr(inner, "forward_features"):
            return inner
    return model


def _family(model: nn.Module) -> str:
    cls = type(model).__name__.lower()
    if "inceptionresnet" in cls:
        return "inception_resnet_v2"
    for name in ("resnet", "convnext", "efficientnet", "visiontransformer"):
        if name in cls:
            return "vit" if name == "visiontransformer" else name
    return "other"


def _probe_last_4d(model: nn.Module, image_size: int = 64) -> str:
    seen: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if name and not list(module.children()):

            def hook(mod: nn.Module, args: object, out: object, name: str = name) -> None:
                if isinstance(out, torch.Tensor) and out.ndim == 4:
                    seen.append(name)

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
    if not seen:
        raise ValueError(f"no 4-D activation found in {type(model).__name__}; pass --target-layer")
    return seen[-1]


def _length(net: nn.Module, attr: str) -> int:
    return len(list(getattr(net, attr).children()))


def resolve_target_layer(model: nn.Module, name: str | None = None) -> TargetLayer:
    """Finds the layer to explain in a timm model (or a LightningModule wrapping one).

    Args:
        model: the network.
        name: an explicit dotted module name (e.g. ``"layer4.1"``) overriding the choice.

    Raises:
        ValueError: when ``name`` is not a module of the model.
    """
    net = backbone_of(model)
    family = _family(net)
    modules = dict(net.named_modules())
    reshape = _vit_reshape(net) if family == "vit" else None
    if name is not None:
        if name not in modules:
            raise ValueError(f"target layer {name!r} is not a module of {type(net).__name__}")
        return TargetLayer(modules[name], name, family, reshape)
    if family == "resnet":
        chosen = f"layer4.{_length(net, 'layer4') - 1}"
    elif family == "inception_resnet_v2":
        chosen = "conv2d_7b"
    elif family == "convnext":
        chosen = f"stages.{_length(net, 'stages') - 1}"
    elif family == "efficientnet":
        chosen = "bn2"
    elif family == "vit":
        chosen = f"blocks.{_length(net, 'blocks') - 1}.norm1"
    else:
        info = getattr(net, "feature_info", None)
        module_name = None
        with contextlib.suppress(Exception):
            module_name = info[-1]["module"] if info is not None else None
        chosen = str(module_name) if module_name in modules else _probe_last_4d(net)
    return TargetLayer(modules[chosen], chosen, family, reshape)


def make_cam(model: nn.Module, method: str, target: TargetLayer) -> BaseCAM:
    """Builds a pytorch-grad-cam explainer for ``method`` (one of :data:`METHODS`)."""
    if method not in METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(METHODS)}")
    cam = METHODS[method](
        model=model, target_layers=[target.module], reshape_transform=target.reshape_transform
    )
    if method == "scorecam":
        cam.batch_size = 64  # type: ignore[attr-defined]
    return cam


def compute_cams(
    model: nn.Module,
    images: torch.Tensor,
    class_indices: Sequence[int],
    *,
    method: str = "gradcam",
    target: TargetLayer | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """CAMs of ``images[i]`` for class ``class_indices[i]``, batched.

    Args:
        model: a network returning logits ``(B, C)``; put in eval mode.
        images: normalised input ``(N, 3, H, W)``.
        class_indices: one class per image (repeat an image to explain several classes).
        method: a key of :data:`METHODS`.
        target: the layer; resolved from ``model`` when omitted.
        batch_size: images per pass.

    Returns:
        ``(N, H, W)`` float32 maps scaled to 0..1 per image.
    """
    if len(class_indices) != len(images):
        raise ValueError(f"{len(images)} images but {len(class_indices)} class indices")
    target = target or resolve_target_layer(model)
    model.eval()
    explainer = make_cam(model, method, target)
    device = next(model.parameters()).device
    out: list[np.ndarray] = []
    try:
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size].to(device)
            targets = [
                ClassifierOutputTarget(int(c)) for c in class_indices[start : start + batch_size]
            ]
            with torch.enable_grad():
                out.append(
                    np.asarray(explainer(input_tensor=chunk, targets=targets), dtype=np.float32)
                )
    finally:
        explainer.activations_and_grads.release()
    if not out:
        return np.zeros((0, *images.shape[-2:]), dtype=np.float32)
    return np.concatenate(out)


def overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """Blends a 0..1 CAM as a jet heat map over an RGB float image in 0..1; returns uint8 RGB."""
    from matplotlib import colormaps

    heat = colormaps["jet"](np.clip(cam, 0, 1))[..., :3]
    blended = (1 - alpha) * np.clip(image, 0, 1) + alpha * heat
    return (np.clip(blended, 0, 1) * 255).astype(np.uint8)
