"""BatchNorm folded into the convolutions for inference: same scores, original untouched."""

from __future__ import annotations

import timm
import torch
from torch import nn

from met_vision.inference.network import fold_batch_norm


def _batch_norms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_folded_copy_scores_like_the_network_and_leaves_it_as_it_was() -> None:
    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=5)
    model.train()
    with torch.no_grad():  # non-trivial running statistics, so that folding has work to do
        for _ in range(3):
            model(torch.randn(8, 3, 64, 64))
    folded = fold_batch_norm(model)
    assert folded is not None
    assert model.training, "the original's mode is restored"
    assert _batch_norms(model) > 0 and _batch_norms(folded) == 0
    images = torch.randn(4, 3, 64, 64)
    with torch.inference_mode():
        expected, got = model.eval()(images), folded(images)
    assert torch.allclose(expected, got, atol=1e-5, rtol=1e-4)


class _Untraceable(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return self.bn(self.conv(x))
        return self.conv(x)


def test_an_untraceable_network_is_left_unfolded() -> None:
    assert fold_batch_norm(_Untraceable()) is None
