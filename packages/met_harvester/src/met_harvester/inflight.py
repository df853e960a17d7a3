"""A bound on requests in flight whose size can change while it is in use (one event loop)."""

from __future__ import annotations

import asyncio
import math
from collections import deque
from types import TracebackType

INFLIGHT_SECONDS = 0.5
"""Automatic concurrency: this many seconds' worth of requests at the current rate."""
MIN_AUTO = 2
MAX_AUTO = 32


def auto_concurrency(rate: float) -> int:
    """Requests in flight for `rate` req/s when none was asked for: enough for answers that
    take up to `INFLIGHT_SECONDS`, at least 2 and at most 32 (the trigger of a firewall like
    the Met's is volume, not concurrency, so more in flight buys nothing)."""
    return max(MIN_AUTO, min(MAX_AUTO, math.ceil(rate * INFLIGHT_SECONDS)))


class InFlightGate:
    """Like `asyncio.Semaphore(size)`, but `size` may be changed at any time."""

    def __init__(self, size: int) -> None:
        self._size = max(1, size)
        self.busy = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def size(self) -> int:
        """How many may be in flight."""
        return self._size

    @size.setter
    def size(self, value: int) -> None:
        self._size = max(1, value)
        self._wake()

    async def __aenter__(self) -> None:
        while self.busy >= self._size:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # woken, then cancelled: pass the free place on
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.busy += 1

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.busy -= 1
        self._wake()

    def _wake(self) -> None:
        free = self._size - self.busy
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1
