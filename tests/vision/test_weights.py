"""Weights fetched once (here: timm's random init, no network) load on an offline node."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from met_vision.trainers.backbones import create_backbone
from met_vision.weights import fetch_weights, main


def test_fetched_weights_load_from_the_directory(tmp_path, monkeypatch):
    (path,) = fetch_weights(["test_resnet"], tmp_path / "weights", pretrained=False)
    assert path == tmp_path / "weights" / "test_resnet.safetensors"
    assert not list(path.parent.glob("*.partial"))
    saved = load_file(str(path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = create_backbone("test_resnet", 3, pretrained_path=str(tmp_path / "weights"))
    body = [k for k in saved if not k.startswith("fc.")]
    assert body and all(torch.equal(model.state_dict()[k], saved[k]) for k in body)
    assert model.state_dict()["fc.weight"].shape[0] == 3  # a fresh head for this label space


def test_an_unknown_backbone_is_one_error_line(tmp_path, capsys):
    assert main(["resnet5O", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("met_vision.weights: error: unknown timm backbone 'resnet5O'")
    assert "\n" not in err
