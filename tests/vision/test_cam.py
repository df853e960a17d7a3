"""Target-layer resolution per backbone family and CAM computation on tiny random timm models."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import timm
import torch
from torch import nn

from met_vision.explain import cam
from met_vision.fairness import bias


@pytest.mark.parametrize(
    ("name", "family", "layer"),
    [
        ("test_resnet", "resnet", "layer4.0"),
        ("test_convnext", "convnext", "stages.3"),
        ("test_efficientnet", "efficientnet", "bn2"),
        ("test_vit", "vit", "blocks.5.norm1"),
    ],
)
def test_resolves_family_layer_and_computes_cams(name: str, family: str, layer: str) -> None:
    torch.manual_seed(0)
    kwargs: dict[str, Any] = {"img_size": 64} if family == "vit" else {}
    model = timm.create_model(name, pretrained=False, num_classes=3, **kwargs)
    target = cam.resolve_target_layer(model)
    assert (target.family, target.name) == (family, layer)
    assert (target.reshape_transform is not None) == (family == "vit")
    images = torch.randn(3, 3, 64, 64)
    maps = cam.compute_cams(model, images, [0, 1, 2], method="gradcam", target=target, batch_size=2)
    assert maps.shape == (3, 64, 64)
    assert maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0 + 1e-6
    # hooks are released: no module keeps a forward or backward hook of the CAM
    hooked = [
        name
        for name, module in model.named_modules()
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
    ]
    assert hooked == []


@pytest.mark.parametrize(
    ("name", "size", "layer"),
    [
        ("test_resnet", 64, "layer2.0"),  # layer3 is 4x4 there
        ("test_resnet", 96, "layer3.0"),  # 6x6; layer4 is 3x3
        ("test_resnet", 224, "layer4.0"),  # 7x7
        ("test_convnext", 96, "stages.2"),
        ("test_convnext", 224, "stages.3"),
    ],
)
def test_default_layer_is_the_deepest_at_least_6x6(name: str, size: int, layer: str) -> None:
    model = timm.create_model(name, pretrained=False, num_classes=3)
    target = cam.resolve_target_layer(model, input_size=size)
    assert target.name == layer
    grid = cam.activation_grids(model, [target.name], (size, size))[target.name]
    assert min(grid) >= cam.MIN_CAM_GRID


def test_inception_resnet_v2_layer_by_name_without_weights() -> None:
    with torch.device("meta"):
        model = timm.create_model("inception_resnet_v2", pretrained=False, num_classes=4)
    target = cam.resolve_target_layer(model)
    assert (target.family, target.name) == ("inception_resnet_v2", "conv2d_7b")


def test_wrapper_explicit_name_and_errors() -> None:
    class Wrapper(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = timm.create_model("test_resnet", pretrained=False, num_classes=2)

    wrapper = Wrapper()
    assert cam.backbone_of(wrapper) is wrapper.model
    assert cam.resolve_target_layer(wrapper, "layer3").name == "layer3"
    with pytest.raises(ValueError, match="not a module"):
        cam.resolve_target_layer(wrapper, "layer9")
    with pytest.raises(ValueError, match="unknown CAM method"):
        cam.make_cam(wrapper.model, "bogus", cam.resolve_target_layer(wrapper))


class RedDetector(nn.Module):
    """Class 0 fires on red pixels, class 1 on blue pixels: the right CAM is known."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 2, kernel_size=1, bias=False)
        with torch.no_grad():
            self.features.weight.zero_()
            self.features.weight[0, 0] = 1.0
            self.features.weight[1, 2] = 1.0
        self.act = nn.ReLU()
        self.fc = nn.Linear(2, 2, bias=False)
        with torch.no_grad():
            self.fc.weight.copy_(torch.eye(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.act(self.features(x)).mean(dim=(2, 3)))


@pytest.mark.parametrize("method", sorted(cam.METHODS))
def test_every_method_points_at_the_evidence(method: str) -> None:
    model = RedDetector()
    target = cam.resolve_target_layer(model)  # generic probe: the last 4-D activation
    assert target.family == "other"
    images = torch.zeros(2, 3, 32, 32)
    images[0, 0, 4:12, 20:28] = 1.0  # red square, top right
    images[1, 2, 18:30, 2:10] = 1.0  # blue square, bottom left
    images[1, 0, 2:4, 2:4] = 0.3  # a faint red distractor
    maps = cam.compute_cams(model, images, [0, 1], method=method, target=target)
    red_box = (20 / 32, 4 / 32, 28 / 32, 12 / 32)
    blue_box = (2 / 32, 18 / 32, 10 / 32, 30 / 32)
    assert bias.pointing_hit(maps[0], red_box)
    assert bias.pointing_hit(maps[1], blue_box)
    assert bias.energy_in_box(maps[1], blue_box) > 0.5


def test_overlay_is_uint8_rgb() -> None:
    image = np.zeros((8, 8, 3))
    heat = np.zeros((8, 8))
    heat[0, 0] = 1.0
    out = cam.overlay(image, heat)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() != out[7, 7].tolist()
