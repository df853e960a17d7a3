"""A fake Met collection API for tests, benchmarks and the demo.

`SyntheticCollection` (pure, deterministic records, learnable images and their ground truth) and
`FakeMetAPI` (an aiohttp server with fault knobs, an Imperva-like firewall and runtime mutation).
"""

from met_harvester.testing.collection import (
    CLASSIFICATIONS,
    LARGE_IMAGE_OBJECT_ID,
    TAG_VOCAB,
    CollectionConfig,
    SyntheticCollection,
)
from met_harvester.testing.faults import FaultConfig, FirewallConfig
from met_harvester.testing.runner import BackgroundFakeAPI, run_fake_api
from met_harvester.testing.server import API_PREFIX, FakeMetAPI, RequestRecord

__all__ = [
    "API_PREFIX",
    "CLASSIFICATIONS",
    "LARGE_IMAGE_OBJECT_ID",
    "TAG_VOCAB",
    "BackgroundFakeAPI",
    "CollectionConfig",
    "FakeMetAPI",
    "FaultConfig",
    "FirewallConfig",
    "RequestRecord",
    "SyntheticCollection",
    "run_fake_api",
]
