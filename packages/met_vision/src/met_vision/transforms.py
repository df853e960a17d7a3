"""Image transforms for training and evaluation (PIL in, normalised float tensor out).

Input size, mean, std, interpolation and crop_pct come from the timm model's pretrained config
(`resolve_data_config`) unless an explicit image size is given.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

AUGMENTATIONS: tuple[str, ...] = ("none", "flip", "trivial", "randaugment")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class DataConfig:
    """What a backbone expects of its input."""

    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bicubic"
    crop_pct: float = 0.875


def resolve_data_config(model_name: str | None, image_size: int | None = None) -> DataConfig:
    """The input config of a timm model (from its pretrained cfg, without building it if
    possible); `image_size` overrides the input size; no model: ImageNet defaults at 224."""
    if model_name is None:
        return DataConfig(input_size=image_size or 224)
    import timm
    import timm.data

    pretrained_cfg = timm.models.get_pretrained_cfg(model_name)
    if pretrained_cfg is not None:
        resolved: dict[str, Any] = timm.data.resolve_data_config(
            pretrained_cfg=pretrained_cfg.to_dict()
        )
    else:
        model = timm.create_model(model_name, pretrained=False)
        resolved = timm.data.resolve_data_config({}, model=model)
    return DataConfig(
        input_size=image_size or int(resolved["input_size"][-1]),
        mean=tuple(float(x) for x in resolved["mean"]),  # type: ignore[arg-type]
        std=tuple(float(x) for x in resolved["std"]),  # type: ignore[arg-type]
        interpolation=str(resolved.get("interpolation", "bicubic")),
        crop_pct=float(resolved.get("crop_pct", 0.875)),
    )


class ToNormalizedTensor:
    """PIL RGB image -> float32 CHW tensor, scaled to [0, 1] and normalised."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.array(image, dtype=np.uint8)  # a writable copy
        tensor = torch.from_numpy(array).permute(2, 0, 1).to(torch.float32).div_(255.0)
        return tensor.sub_(self.mean).div_(self.std)

    def __repr__(self) -> str:
        return f"ToNormalizedTensor(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


def _interpolation(name: str) -> v2.InterpolationMode:
    return {
        "bilinear": v2.InterpolationMode.BILINEAR,
        "bicubic": v2.InterpolationMode.BICUBIC,
        "nearest": v2.InterpolationMode.NEAREST,
    }.get(name, v2.InterpolationMode.BICUBIC)


def build_transform(
    config: DataConfig,
    *,
    train: bool,
    augment: str = "flip",
    crop_scale: tuple[float, float] = (0.35, 1.0),
) -> Callable[[Image.Image], torch.Tensor]:
    """The transform for one stage.

    Args:
        config: input size, mean/std, interpolation and crop_pct of the backbone.
        train: training pipeline (random crops, augmentation) or evaluation (resize + centre crop).
        augment: 'none' (resize + centre crop even in training), 'flip' (RandomResizedCrop +
            horizontal flip), 'trivial' (+ TrivialAugmentWide) or 'randaugment' (+ RandAugment).
        crop_scale: area range of RandomResizedCrop.
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}; use one of {', '.join(AUGMENTATIONS)}")
    size = config.input_size
    to_tensor = ToNormalizedTensor(config.mean, config.std)
    if not train or augment == "none":
        resize_to = math.floor(size / config.crop_pct)
        steps: list[Any] = [
            v2.Resize(resize_to, interpolation=_interpolation(config.interpolation)),
            v2.CenterCrop(size),
        ]
        return v2.Compose([*steps, to_tensor])
    steps = [
        v2.RandomResizedCrop(size, scale=crop_scale, interpolation=v2.InterpolationMode.BILINEAR),
        v2.RandomHorizontalFlip(),
    ]
    if augment == "trivial":
        steps.append(v2.TrivialAugmentWide())
    elif augment == "randaugment":
        steps.append(v2.RandAugment())
    return v2.Compose([*steps, to_tensor])
