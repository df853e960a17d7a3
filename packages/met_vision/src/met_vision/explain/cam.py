"""Class activation maps with pytorch-grad-cam, with the target layer resolved per backbone.

The default layer adapts to the input size: the deepest stage (timm's ``feature_info``) whose
activation is at least ``MIN_CAM_GRID`` = 6 cells on its short side at the model's input size.
A 3x3 map cannot say where a 20 px motif is; Grad-CAM on the last 7x7 stage is the classic
choice at 224 px (Selvaraju et al. 2017). So a ResNet gets ``layer4`` at 224 px (7x7) and
``layer3`` at 96 px (6x6). When the last stage is wide enough, the family's classic last layer is
used: timm ResNets (``layer4[-1]``), Inception-ResNet-v2 (``conv2d_7b``), ConvNeXt
(``stages[-1]``), EfficientNet (``bn2``, the activated head conv) and ViT (``blocks[-1].norm1``
with a reshape transform from tokens to a grid; one grid throughout, so always the last block).
Anything else falls back to the last module of ``feature_info`` or, failing that, the last module
that produced a 4-D activation in a probe forward pass. ``--target-layer`` overrides the choice.
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


# Grad-CAM needs a grid that can point somewhere: the deepest layer at least this many cells wide.
MIN_CAM_GRID = 6


def _family_default(net: nn.Module, family: str, modules: dict[str, nn.Module]) -> str:
    """The last convolutional layer of a backbone family (the classic Grad-CAM layer)."""
    if family == "resnet":
        return f"layer4.{_length(net, 'layer4') - 1}"
    if family == "inception_resnet_v2":
        return "conv2d_7b"
    if family == "convnext":
        return f"stages.{_length(net, 'stages') - 1}"
    if family == "efficientnet":
        return "bn2"
    if family == "vit":
        return f"blocks.{_length(net, 'blocks') - 1}.norm1"
    info = getattr(net, "feature_info", None)
    module_name = None
    with contextlib.suppress(Exception):
        module_name = info[-1]["module"] if info is not None else None
    return str(module_name) if module_name in modules else _probe_last_4d(net)


def _stage_names(net: nn.Module, modules: dict[str, nn.Module]) -> list[str]:
    """The backbone's stages, shallow to deep (timm's ``feature_info``)."""
    info = getattr(net, "feature_info", None)
    names: list[str] = []
    with contextlib.suppress(Exception):
        names = [str(entry["module"]) for entry in info] if info is not None else []
    return [n.replace("_", ".") if n not in modules else n for n in names if n]


def activation_grids(
    net: nn.Module, names: Sequence[str], input_size: tuple[int, int]
) -> dict[str, tuple[int, int]]:
    """The (height, width) of each named module's output for one input of ``input_size``."""
    modules = dict(net.named_modules())
    grids: dict[str, tuple[int, int]] = {}
    handles = []
    for name in names:

        def hook(mod: nn.Module, args: object, out: object, name: str = name) -> None:
            if isinstance(out, torch.Tensor) and out.ndim == 4:
                grids[name] = (int(out.shape[-2]), int(out.shape[-1]))

        handles.append(modules[name].register_forward_hook(hook))
    was_training = net.training
    try:
        with torch.no_grad():
            device = next(net.parameters()).device
            net.eval()(torch.zeros(1, 3, *input_size, device=device))
    finally:
        for handle in handles:
            handle.remove()
        net.train(was_training)
    return grids


def default_target_layer(
    net: nn.Module, family: str, input_size: int | tuple[int, int] | None
) -> str:
    """The deepest stage whose activation is at least ``MIN_CAM_GRID`` cells on its short side at
    ``input_size`` (a ResNet: ``layer4`` at 224 px, 7x7; ``layer3`` at 96 px, 6x6), else the
    family's last layer. ViTs keep one token grid throughout: their last block."""
    modules = dict(net.named_modules())
    last = _family_default(net, family, modules)
    if input_size is None or family == "vit":
        return last
    size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
    stages = [n for n in _stage_names(net, modules) if n in modules]
    candidates = [*stages, last] if last not in stages else stages
    try:
        grids = activation_grids(net, candidates, (int(size[0]), int(size[1])))
    except RuntimeError as exc:  # too small an input for this network
        log.warning("cannot probe %s at %s px (%s); using %s", type(net).__name__, size, exc, last)
        return last
    wide_enough = [n for n in candidates if n in grids and min(grids[n]) >= MIN_CAM_GRID]
    if not wide_enough or wide_enough[-1] in (last, stages[-1] if stages else last):
        return last
    chosen = wide_enough[-1]
    children = [c for c, _ in modules[chosen].named_children()]
    return f"{chosen}.{children[-1]}" if family == "resnet" and children else chosen


def resolve_target_layer(
    model: nn.Module, name: str | None = None, input_size: int | tuple[int, int] | None = None
) -> TargetLayer:
    """Finds the layer to explain in a timm model (or a LightningModule wrapping one).

    Args:
        model: the network.
        name: an explicit dotted module name (e.g. ``"layer4.1"``) overriding the choice.
        input_size: the model's input size; the default layer is then the deepest one whose
            activation is at least ``MIN_CAM_GRID`` x ``MIN_CAM_GRID`` there (see
            `default_target_layer`). None: the family's last layer.

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
    chosen = default_target_layer(net, family, input_size)
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
    height, width = (int(v) for v in images.shape[-2:])
    target = target or resolve_target_layer(model, input_size=(height, width))
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
