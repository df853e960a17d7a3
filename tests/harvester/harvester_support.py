"""Helpers shared by the harvester tests (fixtures are in conftest.py)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from met_harvester.testing import API_PREFIX, FakeMetAPI

MET_SAMPLES = Path(__file__).resolve().parents[2] / ".." / "shared" / "met-samples"
"""Real API samples, next to the repo and never inside it; tests skip when it is absent (and fail
under CI=true, see `samples_required`)."""


def samples_required(path: Path = MET_SAMPLES) -> pytest.MarkDecorator:
    """Mark a test that reads `path` under the shared samples: skipped when it is absent,
    except under `CI=true`, where the test fails saying what is missing (CI must have it)."""
    if path.exists():
        return pytest.mark.skipif(False, reason=f"{path} is present")
    if os.environ.get("CI", "").strip().lower() == "true":
        return pytest.mark.usefixtures("fail_without_samples")
    return pytest.mark.skip(reason=f"{path} is absent (shared met-samples)")


FakeApiFactory = Callable[..., Awaitable[FakeMetAPI]]
"""The type of the `fake_api_factory` fixture."""

_OBJECTS = API_PREFIX + "/objects/"


def harvester_env(**variables: str) -> dict[str, str]:
    """The environment for a `met-harvester` subprocess: the caller's, without any
    MET_HARVESTER_* setting of its own, plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MET_HARVESTER_")}
    env.update(variables)
    return env


def object_fetches(api: FakeMetAPI, since: int = 0) -> list[int]:
    """Ids requested at /objects/{id}, in the order the server saw them, from request `since` on."""
    return [
        int(r.path[len(_OBJECTS) :])
        for r in api.requests[since:]
        if r.path.startswith(_OBJECTS) and r.path[len(_OBJECTS) :].isdigit()
    ]
