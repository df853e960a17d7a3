"""Shared fixtures for met_vision tests: tiny real mirrors made by `data/make_mirror.py`."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from xai_support import load_make_mirror


@pytest.fixture(scope="session")
def make_mirror_module() -> ModuleType:
    """The fixture script as a module (`make_mirror`, `SPECIAL_KINDS`, ...)."""
    return load_make_mirror()


@pytest.fixture(scope="session")
def mirror_factory(
    tmp_path_factory: pytest.TempPathFactory, make_mirror_module: ModuleType
) -> Callable[..., Path]:
    """`mirror_factory(n_objects=300, seed=0, bias=None, size="small", specials=True) -> Path`:
    a data dir holding a real mirror; the same arguments return the same (shared) dir."""
    made: dict[tuple[Any, ...], Path] = {}

    def factory(
        n_objects: int = 300,
        seed: int = 0,
        bias: float | None = None,
        size: str = "small",
        specials: bool = True,
    ) -> Path:
        key = (n_objects, seed, bias, size, specials)
        if key not in made:
            out = tmp_path_factory.mktemp(f"mirror-{n_objects}-{seed}")
            make_mirror_module.make_mirror(out, n_objects, seed, bias, size, specials=specials)
            made[key] = out
        return made[key]

    return factory


@pytest.fixture(scope="session")
def tiny_mirror(mirror_factory: Callable[..., Path]) -> Path:
    """A shared 300-object mirror (seed 0, small images, with the special inputs).

    Treat it as read-only; tests that write (prepare, new objects) use `fresh_mirror`.
    """
    return mirror_factory(300, 0)


@pytest.fixture
def fresh_mirror(tiny_mirror: Path, tmp_path: Path) -> Path:
    """A private copy of `tiny_mirror` (without any cache) that a test may change."""
    out = tmp_path / "data"
    shutil.copytree(tiny_mirror, out, ignore=shutil.ignore_patterns("cache"))
    return out
