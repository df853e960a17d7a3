"""An exact, adaptive request-rate limiter that tells stray block answers from real blocks.

Pure: no network, injectable clock and sleep. Three rules decide when a request may start:

* pacing: start times lie on an even grid spaced for ``rate * (1 - headroom)``. A start that
  comes late by more than one slot restarts the grid at that moment, so the limiter never
  catches up with a burst after a stall (a busy event loop that wakes it a little late loses
  nothing, and at most two starts ever come back to back);
* a hard cap: a log of the last ``ceil(rate) + 1`` start times forbids more than that many
  starts in any window of ``1 + jitter_margin`` seconds, so the ceiling holds in every 1-second
  window even as the server sees it, with up to 20 ms of jitter on the way;
* probes: a block answer (403, HTML where JSON was expected, 429, or a run of 5xx/timeouts)
  stops the whole pool. After a short pause (``Retry-After`` if the server sent one) exactly
  one request, the probe, may go. If it passes, the block answer was stray: the pool resumes
  with a mild cut. If it is blocked too, the block is real: the rate is cut multiplicatively
  and further single probes go at growing intervals until one passes. How long the block
  lasted is learned, and the next real block is first probed just before that length.

An AIMD controller sets the current rate: after a real block it climbs back additively to just
below the blocking rate; above that (or with nothing learned) it only takes one small additive
step after each long clean stretch, and a step that ends in a block doubles the wait before the
next one. Everything learned is `state()`, to be persisted and handed to the next run. The
answers and incidents are handled in `met_harvester.ratelimit_incidents`, the tuning and the
learned state are plain data in `met_harvester.ratelimit_policy`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from met_harvester.ratelimit_incidents import (
    _STARTED,
    RECENT_INCIDENTS,
    Abandoned,
    IncidentHandling,
    _Incident,
)
from met_harvester.ratelimit_policy import AimdPolicy, LimiterState

if TYPE_CHECKING:
    from met_harvester.metrics import HarvesterMetrics

__all__ = ["Abandoned", "AdaptiveRateLimiter", "AimdPolicy", "LimiterState"]

log = logging.getLogger("met_harvester.ratelimit")

MAX_LOGGED_RATE = 10_000
"""Above this many requests/s the hard cap's log is not kept (pacing alone bounds windows)."""
POLL_SECONDS = 0.02
"""How often a waiting acquirer looks whether the probe in flight was answered."""

MAX_SLEEP = 0.25
"""Longest single sleep inside `acquire`, so that `abandon_waiting` is noticed quickly."""

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


class AdaptiveRateLimiter(IncidentHandling):
    """Schedules request start times at the current rate and adapts that rate to blocks.

    Args:
        ceiling: requests/s never exceeded (``--rate``).
        initial: rate to start at; ``None``: the state's rate, else the ceiling.
        state: what an earlier run learned (rates, block length, climb back-off).
        name: pool name, used in logs and metric labels.
        cooldown: seconds from a block answer to the first probe (``policy.first_probe``
            when None).
        metrics: counts rate changes and exports the current rate.
        clock: monotonic clock in seconds.
        sleep: coroutine function sleeping for the given seconds.
        policy: AIMD and probe tuning.
        headroom: pacing runs at ``rate * (1 - headroom)``.
        jitter_margin: the hard cap counts starts in windows of ``1 + jitter_margin`` seconds,
            so that much delay between our start and the server's clock is tolerated.
    """

    def __init__(
        self,
        ceiling: float,
        *,
        initial: float | None = None,
        state: LimiterState | None = None,
        name: str = "api",
        cooldown: float | None = None,
        metrics: HarvesterMetrics | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        policy: AimdPolicy | None = None,
        headroom: float = 0.01,
        jitter_margin: float = 0.02,
    ) -> None:
        if not ceiling > 0:
            raise ValueError(f"rate ceiling must be > 0, got {ceiling}")
        if not 0 <= headroom < 0.03:
            raise ValueError(f"headroom must be in [0, 0.03), got {headroom}")
        self.ceiling = float(ceiling)
        self.name = name
        self.policy = policy or AimdPolicy()
        self.first_probe = self.policy.first_probe if cooldown is None else float(cooldown)
        self.headroom = headroom
        self.jitter_margin = jitter_margin
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()
        self._floor = min(self.policy.min_rate, self.ceiling)

        known = state or LimiterState(current_rate=self.ceiling)
        self._clean_rate = known.clean_rate
        self._block_rate = known.block_rate
        self.block_seconds = known.block_seconds
        self._probe_period = known.probe_period or self.policy.probe_period
        self.blocks = known.blocks
        self.strays = known.strays
        start = known.current_rate if initial is None else float(initial)
        self.current_rate = min(self.ceiling, max(self._floor, start))

        now = clock()
        self._incident: _Incident | None = None
        self._abandoned = False
        self._resumed_at = -math.inf  # end of the last incident
        self._last_change = now  # when the current rate was set
        self._last_trouble = -math.inf  # end of the last real block (strays do not count)
        self._error_run = 0
        self._passes = 0  # answers passed since the last incident ended
        self._outcomes: deque[bool] = deque(maxlen=RECENT_INCIDENTS)  # True: it was stray
        self._close_calls = 0  # incidents in a row that came within a few answers of the last
        self._anchor = -math.inf  # slot k of the current grid starts at anchor + k / rate
        self._slot_index = 0
        self._last_slot: float | None = None
        self._starts: deque[float] | None = None  # the hard cap's log; None above MAX_LOGGED_RATE
        self._resize_log()
        self._grants: deque[float] = deque()
        self._export_rate()

    # ------------------------------------------------------------------ public state
    @property
    def learned_rate(self) -> float | None:
        """The sustainable rate learned so far; ``None`` while nothing was learned."""
        if self._block_rate is None and self._clean_rate is None:
            return None
        return self._target()

    @property
    def paused(self) -> bool:
        """Whether the pool is stopped by a block answer under examination."""
        return self._incident is not None

    def state(self) -> LimiterState:
        """What this limiter knows, for the next run (see `LimiterState`)."""
        return LimiterState(
            current_rate=self.current_rate,
            clean_rate=self._clean_rate,
            block_rate=self._block_rate,
            block_seconds=self.block_seconds,
            probe_period=self._probe_period,
            blocks=self.blocks,
            strays=self.strays,
        )

    def eta_seconds(self, remaining: int) -> float:
        """Honest seconds to finish `remaining` requests at the current rate, plus any pause."""
        wait = 0.0
        if self._incident is not None:
            expected = self.block_seconds or self.first_probe
            wait = max(0.0, self._incident.started + expected - self._clock())
        return wait + max(0, remaining) / self.current_rate

    def now(self) -> float:
        """The limiter's clock (what `acquire` returns)."""
        return self._clock()

    # ------------------------------------------------------------------ scheduling
    async def acquire(self) -> float:
        """Wait for the next start slot (or the probe's turn); returns the start time, to be
        passed back as ``started_at`` with the answer."""
        self.request_done()  # this task's previous request, if any, is over
        async with self._lock:
            while True:
                if self._abandoned:
                    raise Abandoned(f"{self.name} pool stopped")
                now = self._clock()
                wait = self._incident_wait(now) if self._incident is not None else 0.0
                if wait <= 0.0 and self._incident is None:
                    wait = self._pacing_wait(now)
                if wait <= 0.0:
                    wait = self._cap_wait(now)
                if wait > 1e-9:
                    await self._sleep(min(wait, MAX_SLEEP))
                    continue
                self._grant(now)
                _STARTED.set((asyncio.current_task(), now))
                return now

    def _incident_wait(self, now: float) -> float:
        inc = self._incident
        assert inc is not None
        if inc.probe_started is not None:
            if now - inc.probe_started < self.policy.probe_timeout:
                return POLL_SECONDS  # the probe is out: wait for its answer
            log.warning(
                "%s: probe unanswered for %.0fs, sending another",
                self.name,
                now - inc.probe_started,
            )
            inc.probe_started = None
            inc.probe_at = now
        return max(0.0, inc.probe_at - now)

    def _pacing_wait(self, now: float) -> float:
        interval = 1.0 / (self.current_rate * (1.0 - self.headroom))
        slot = self._anchor + self._slot_index * interval
        if slot < now - interval:  # late by over a slot, or idle: restart the grid, no catching up
            self._anchor, self._slot_index = now, 0
            slot = now
        return max(0.0, slot - now)

    def _cap_wait(self, now: float) -> float:
        starts = self._starts
        if starts is None or len(starts) < (starts.maxlen or 0):
            return 0.0
        return max(0.0, starts[0] + 1.0 + self.jitter_margin - now)

    def _grant(self, now: float) -> None:
        if self._incident is not None:
            self._incident.probe_started = now
            log.info(
                "%s: probing with one request, %.1fs after the block answer",
                self.name,
                now - self._incident.started,
                extra={"pool": self.name},
            )
        else:
            self._slot_index += 1
        self._last_slot = now
        if self._starts is not None:
            self._starts.append(now)
        self._grants.append(now)
        horizon = now - self.policy.observe_window
        while self._grants and self._grants[0] < horizon:
            self._grants.popleft()

    def abandon_waiting(self) -> None:
        """The pool stops: every `acquire` still waiting, now or later, raises `Abandoned`."""
        self._abandoned = True

    # ------------------------------------------------------------------ the rate
    def _target(self) -> float:
        """Where the rate climbs back to quickly: just below the last block (else the clean
        rate, else the current rate: with nothing learned there is no quick climb)."""
        target = 0.0
        if self._block_rate is not None:
            target = self.policy.safety * self._block_rate
        if self._clean_rate is not None and (
            self._block_rate is None or self._clean_rate < self._block_rate
        ):
            target = max(target, self._clean_rate)
        if target == 0.0:
            target = self.current_rate
        return min(self.ceiling, max(self._floor, target))

    def _observed(self, now: float) -> float | None:
        start = max(now - self.policy.observe_window, self._resumed_at)
        since = [t for t in self._grants if t >= start]
        if len(since) < 2 or now - since[0] < min(1.0, self.policy.observe_window / 2):
            return None
        return (len(since) - 1) / (now - since[0])

    def _promote_clean(self, now: float) -> None:
        if self._clean_rate is not None and self.current_rate <= self._clean_rate:
            return
        clean_since = max(self._last_change, self._last_trouble)
        if now - clean_since < self.policy.clean_period:
            return
        self._clean_rate = self.current_rate
        if self._block_rate is not None and self._clean_rate >= self._block_rate:
            self._block_rate = None  # the old block no longer binds
        log.info(
            "%s: %.3g req/s ran clean for %.0fs; learned rate %.3g req/s",
            self.name,
            self.current_rate,
            now - clean_since,
            self._target(),
            extra={"pool": self.name},
        )

    def _maybe_increase(self, now: float) -> None:
        if self.current_rate >= self.ceiling:
            return
        quiet = now - max(self._last_change, self._last_trouble)
        target = self._target()
        if self.current_rate < target * (1 - 1e-9):
            if quiet >= self.policy.quiet_period:
                cut = self.policy.decrease * (self._block_rate or target)
                step = max(self._floor, (target - cut) / self.policy.climb_steps)
                self._set_rate(min(target, self.current_rate + step), now, "up")
        elif quiet >= self._probe_period:
            self._set_rate(self.current_rate + self.policy.climb_step, now, "up")

    def _set_rate(self, rate: float, now: float, direction: str) -> None:
        rate = min(self.ceiling, max(self._floor, rate))
        if rate == self.current_rate:
            return
        if direction == "up":
            log.info(
                "%s: ran clean for %.0fs: rate %.3g -> %.3g req/s (target %.3g, ceiling %.3g)",
                self.name,
                now - max(self._last_change, self._last_trouble),
                self.current_rate,
                rate,
                self._target(),
                self.ceiling,
                extra={"pool": self.name},
            )
        self.current_rate = rate
        self._last_change = now
        self._resize_log()
        if self._last_slot is not None:  # continue the grid from the last start at the new rate
            self._anchor = self._last_slot + 1.0 / (rate * (1.0 - self.headroom))
            self._slot_index = 0
        if self._metrics is not None:
            self._metrics.throttle_changes.labels(pool=self.name, direction=direction).inc()
        self._export_rate()

    def _resize_log(self) -> None:
        size = math.ceil(self.current_rate) + 1
        if size > MAX_LOGGED_RATE:
            self._starts = None  # at such rates strict pacing alone bounds every window
            return
        self._starts = deque(self._starts or (), maxlen=size)

    def _export_rate(self) -> None:
        if self._metrics is not None:
            self._metrics.current_rate.labels(pool=self.name).set(self.current_rate)
