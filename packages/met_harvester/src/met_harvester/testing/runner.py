"""Run the fake API outside an async test: in a background thread, or in the foreground (CLI)."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TextIO, TypeVar

from met_harvester.testing.collection import CollectionConfig, SyntheticCollection
from met_harvester.testing.faults import FaultConfig, FirewallConfig
from met_harvester.testing.server import FakeMetAPI

T = TypeVar("T")


class BackgroundFakeAPI:
    """A FakeMetAPI running on its own event loop in a daemon thread.

    Every method runs on that loop, so it is safe to call from synchronous code (demo, benchmarks,
    Lightning tests). Use as a context manager or call `stop()`.
    """

    def __init__(self, api: FakeMetAPI, loop: asyncio.AbstractEventLoop, thread: threading.Thread):
        self.api = api
        self._loop = loop
        self._thread = thread

    @property
    def api_url(self) -> str:
        """The API base URL."""
        return self.api.api_url

    @property
    def image_host(self) -> str:
        """HOST:PORT of the image URLs."""
        return self.api.image_host

    @property
    def base_url(self) -> str:
        """http://HOST:PORT"""
        return self.api.base_url

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn(*args, **kwargs)` on the server's loop and return its result."""

        async def run() -> T:
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def count(self, path_prefix: str = "") -> int:
        """See FakeMetAPI.count."""
        return self.call(self.api.count, path_prefix)

    def mutate(self, object_id: int, **fields: Any) -> None:
        """See FakeMetAPI.mutate."""
        self.call(self.api.mutate, object_id, **fields)

    def add_object(self, object_id: int | None = None) -> int:
        """See FakeMetAPI.add_object."""
        return self.call(self.api.add_object, object_id)

    def remove_object(self, object_id: int) -> None:
        """See FakeMetAPI.remove_object."""
        self.call(self.api.remove_object, object_id)

    def set_faults(self, faults: FaultConfig | None) -> None:
        """See FakeMetAPI.set_faults."""
        self.call(self.api.set_faults, faults)

    def stop(self) -> None:
        """Stop the server and its thread."""
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self.api.stop(), self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __enter__(self) -> BackgroundFakeAPI:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_fake_api(
    n_objects: int = 5000,
    seed: int = 0,
    *,
    bias: float | None = None,
    faults: FaultConfig | None = None,
    firewall: FirewallConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    collection: SyntheticCollection | None = None,
) -> BackgroundFakeAPI:
    """Start a fake API in a background thread and return once it listens."""
    coll = collection or SyntheticCollection(
        CollectionConfig(n_objects=n_objects, seed=seed, bias=bias)
    )
    api = FakeMetAPI(coll, faults=faults, firewall=firewall)
    loop = asyncio.new_event_loop()
    started: Future[None] = Future()

    def main() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(api.start(host, port))
        except BaseException as exc:  # surface bind errors to the caller
            started.set_exception(exc)
            return
        started.set_result(None)
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=main, name="fake-met-api", daemon=True)
    thread.start()
    started.result(timeout=60)
    return BackgroundFakeAPI(api, loop, thread)


def write_truth(collection: SyntheticCollection, path: Path) -> int:
    """Write {object_id: truth} of every object as JSON; returns the number of objects."""
    ids = collection.object_ids
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write("{")
        for k, object_id in enumerate(ids):
            fh.write(
                ("," if k else "") + f'\n"{object_id}":' + json.dumps(collection.truth(object_id))
            )
        fh.write("\n}\n")
    tmp.replace(path)
    return len(ids)


async def serve_until_signal(
    api: FakeMetAPI, host: str, port: int, out: TextIO = sys.stdout
) -> None:
    """Start `api`, print the ready line, and serve until SIGINT or SIGTERM."""
    await api.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"fake-api listening on {api.api_url}", file=out, flush=True)
    try:
        await stop.wait()
    finally:
        await api.stop()
