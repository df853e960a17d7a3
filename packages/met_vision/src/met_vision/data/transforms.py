"""Image transforms for training and evaluation (PIL in, uint8 CHW tensor out).

DataLoader workers ship uint8 images (a quarter of the bytes of float32); the model normalises
them on its device (`normalize_images`, called by `ClassificationTask.on_after_batch_transfer`).
`build_transform(..., normalize=True)` gives the normalised float tensor directly instead.

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
from torchvision.transforms import RandomResizedCrop, v2

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

    def to_dict(self) -> dict[str, Any]:
        """timm's data-config form (``timm.data.create_transform(**config)`` accepts it)."""
        return {
            "input_size": (3, self.input_size, self.input_size),
            "mean": tuple(self.mean),
            "std": tuple(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
            "crop_mode": "center",
        }

    @classmethod
    def from_dict(cls, config: dict[str, Any]) -> DataConfig:
        """Inverse of :meth:`to_dict` (also accepts a plain int ``input_size``)."""
        size = config["input_size"]
        return cls(
            input_size=int(size[-1] if isinstance(size, list | tuple) else size),
            mean=tuple(float(x) for x in config["mean"]),  # type: ignore[arg-type]
            std=tuple(float(x) for x in config["std"]),  # type: ignore[arg-type]
            interpolation=str(config.get("interpolation", "bicubic")),
            crop_pct=float(config.get("crop_pct", 0.875)),
        )


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
    """PIL RGB image -> contiguous float32 CHW tensor, scaled to [0, 1] and normalised.

    Normalising channel by channel with scalars keeps the inner loops long (a broadcast over
    the last dimension of an HWC tensor is several times slower).
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.scale = [1.0 / (255.0 * s) for s in std]
        self.shift = [-m / s for m, s in zip(mean, std, strict=True)]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.array(image, dtype=np.uint8)  # a writable HWC copy
        tensor = torch.from_numpy(array).permute(2, 0, 1).float().contiguous()
        for channel in range(3):
            tensor[channel].mul_(self.scale[channel]).add_(self.shift[channel])
        return tensor

    def __repr__(self) -> str:
        return "ToNormalizedTensor()"


class ToUint8Tensor:
    """PIL RGB image -> contiguous uint8 CHW tensor (normalisation happens on the device)."""

    def __call__(self, image: Image.Image) -> torch.Tensor:
        array = np.array(image, dtype=np.uint8)  # a writable HWC copy
        return torch.from_numpy(array).permute(2, 0, 1).contiguous()

    def __repr__(self) -> str:
        return "ToUint8Tensor()"


def normalize_images(
    images: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    channels_last: bool = False,
) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` (or ``[3, H, W]``) -> float32 scaled to [0, 1] and normalised,
    on the tensor's device; float input is returned unchanged (already normalised)."""
    if images.dtype != torch.uint8:
        return images
    shape = (1, 3, 1, 1) if images.dim() == 4 else (3, 1, 1)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=images.device).view(shape)
    shift = torch.tensor([-m / s for m, s in zip(mean, std, strict=True)], device=images.device)
    memory_format = (
        torch.channels_last if channels_last and images.dim() == 4 else torch.contiguous_format
    )
    out = images.to(dtype=torch.float32, memory_format=memory_format)
    return out.mul_(scale).add_(shift.view(shape))


class Pipeline:
    """Apply steps in order (a minimal Compose: one PIL image in, one tensor out)."""

    def __init__(self, steps: Sequence[Callable[[Any], Any]]) -> None:
        self.steps = list(steps)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        value: Any = image
        for step in self.steps:
            value = step(value)
        return value  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return "Pipeline(" + ", ".join(repr(step) for step in self.steps) + ")"


_PIL_RESAMPLE = {
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


class ResizeCenterCrop:
    """Resize the short side to `size / crop_pct` and take the centred `size` square, in one
    PIL resize of just that region (`resize(box=...)`: no full-image resize, no crop copy)."""

    def __init__(self, size: int, crop_pct: float = 1.0, interpolation: str = "bicubic") -> None:
        self.size = size
        self.resize_to = math.floor(size / crop_pct)
        self.resample = _PIL_RESAMPLE.get(interpolation, Image.Resampling.BICUBIC)

    def __call__(self, image: Image.Image) -> Image.Image:
        width, height = image.size
        side = self.size * min(width, height) / self.resize_to  # the crop, in source pixels
        left, top = (width - side) / 2, (height - side) / 2
        box = (left, top, left + side, top + side)
        return image.resize((self.size, self.size), self.resample, box=box)

    def __repr__(self) -> str:
        return f"ResizeCenterCrop(size={self.size}, resize_to={self.resize_to})"


class RandomResizedCropFlip:
    """RandomResizedCrop (torchvision's parameter draw) + horizontal flip with p=0.5, as one
    PIL resize of the drawn region."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.35, 1.0)) -> None:
        self.size = size
        self.scale = scale
        self.ratio = (3 / 4, 4 / 3)

    def __call__(self, image: Image.Image) -> Image.Image:
        top, left, height, width = RandomResizedCrop.get_params(
            image, list(self.scale), list(self.ratio)
        )  # type: ignore[arg-type]
        box = (left, top, left + width, top + height)
        out = image.resize((self.size, self.size), Image.Resampling.BILINEAR, box=box)
        if torch.rand(1).item() < 0.5:
            out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return out

    def __repr__(self) -> str:
        return f"RandomResizedCropFlip(size={self.size}, scale={self.scale})"


def build_transform(
    config: DataConfig,
    *,
    train: bool,
    augment: str = "flip",
    crop_scale: tuple[float, float] = (0.35, 1.0),
    normalize: bool = False,
) -> Callable[[Image.Image], torch.Tensor]:
    """The transform for one stage: a uint8 ``[3, H, W]`` tensor (see `normalize_images`).

    Args:
        config: input size, mean/std, interpolation and crop_pct of the backbone.
        train: training pipeline (random crops, augmentation) or evaluation (resize + centre crop).
        augment: 'none' (resize + centre crop even in training), 'flip' (RandomResizedCrop +
            horizontal flip), 'trivial' (+ TrivialAugmentWide) or 'randaugment' (+ RandAugment).
        crop_scale: area range of RandomResizedCrop.
        normalize: return the normalised float32 tensor instead (for models fed directly).
    """
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}; use one of {', '.join(AUGMENTATIONS)}")
    size = config.input_size
    to_tensor = ToNormalizedTensor(config.mean, config.std) if normalize else ToUint8Tensor()
    if not train or augment == "none":
        return Pipeline([ResizeCenterCrop(size, config.crop_pct, config.interpolation), to_tensor])
    steps: list[Any] = [RandomResizedCropFlip(size, crop_scale)]
    if augment == "trivial":
        steps.append(v2.TrivialAugmentWide())
    elif augment == "randaugment":
        steps.append(v2.RandAugment())
    return Pipeline([*steps, to_tensor])
