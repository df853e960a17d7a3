"""The cluster files agree with the tested stack: one set of pins, current NCCL names, offline hub."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = [REPO / "docker" / "vision.Dockerfile", REPO / "docker" / "apptainer" / "met.def"]
TEMPLATES = sorted((REPO / "docker" / "slurm").glob("*.sbatch"))


def _pins() -> dict[str, str]:
    lines = (REPO / "constraints.txt").read_text().splitlines()
    return dict(ln.split("==") for ln in lines if ln.strip() and not ln.startswith("#"))


def test_the_venv_runs_the_pinned_versions():
    pins = _pins()
    assert {"torch", "torchvision", "timm", "lightning"} <= set(pins)
    for name, pinned in pins.items():
        assert version(name).split("+")[0] == pinned, name


@pytest.mark.parametrize("image", IMAGES, ids=lambda p: p.name)
def test_images_install_from_the_constraints_with_rdma(image: Path):
    text = image.read_text()
    installs = [ln for ln in text.splitlines() if "pip install" in ln]
    assert installs and all("constraints.txt" in ln for ln in installs)
    assert not re.search(r"\b(torch|torchvision|timm|lightning)==", text)  # no second set of pins
    assert "rdma-core" in text and "libibverbs1" in text
    assert "HF_HUB_OFFLINE=1" in text


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_templates_signal_the_batch_shell_and_stay_offline(template: Path):
    text = template.read_text()
    assert "#SBATCH --signal=B:USR1@" in text and "trap " in text
    assert "scontrol requeue" in text and "export HF_HUB_OFFLINE=1" in text
    assert "TORCH_NCCL_ASYNC_ERROR_HANDLING=1" in text
    assert not re.search(r"(?<!TORCH_)NCCL_ASYNC_ERROR_HANDLING", text)  # the deprecated name
    assert "--model.pretrained_path /weights" in text
