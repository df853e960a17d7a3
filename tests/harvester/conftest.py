"""Fixtures for harvester tests: the fake Met API on loopback (real HTTP, port 0)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from harvester_support import MET_SAMPLES, FakeApiFactory

from met_harvester.testing import (
    CollectionConfig,
    FakeMetAPI,
    FaultConfig,
    FirewallConfig,
    SyntheticCollection,
)


@pytest.fixture
async def fake_api_factory() -> AsyncIterator[FakeApiFactory]:
    """Async factory: `await fake_api_factory(n_objects=..., seed=..., faults=..., firewall=...)`.

    Further keyword arguments: `bias`, `host` (a 127.0.0.x address), `shuffle_listing`,
    `collection` (a ready SyntheticCollection), and any other `CollectionConfig` field.
    Every server started is stopped at teardown.
    """
    started: list[FakeMetAPI] = []

    async def factory(
        n_objects: int = 200,
        seed: int = 0,
        faults: FaultConfig | None = None,
        firewall: FirewallConfig | None = None,
        *,
        bias: float | None = None,
        host: str = "127.0.0.1",
        shuffle_listing: bool = True,
        collection: SyntheticCollection | None = None,
        **config: Any,
    ) -> FakeMetAPI:
        coll = collection or SyntheticCollection(
            CollectionConfig(n_objects=n_objects, seed=seed, bias=bias, **config)
        )
        api = FakeMetAPI(coll, faults=faults, firewall=firewall, shuffle_listing=shuffle_listing)
        await api.start(host, 0)
        started.append(api)
        return api

    yield factory
    for api in reversed(started):
        await api.stop()


@pytest.fixture
def fail_without_samples() -> None:
    """Used by `samples_required` under CI=true when the shared samples are absent."""
    pytest.fail(
        f"CI=true but {MET_SAMPLES} is missing: check out the shared met-samples next to the repo"
    )


@pytest.fixture
async def fake_api(fake_api_factory: FakeApiFactory) -> FakeMetAPI:
    """A started fake API with 200 objects, seed 0, no faults, no firewall."""
    return await fake_api_factory(n_objects=200)
