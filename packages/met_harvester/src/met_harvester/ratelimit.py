"""An exact, adaptive request-rate limiter (pure: no network, injectable clock and sleep).

Two rules decide when a request may start:

* pacing: start times lie on a grid (GCRA / virtual scheduling with a burst of one) spaced for
  ``rate * (1 - headroom)``; slots missed by a late wake-up or a busy event loop are caught up
  (up to ``catch_up`` seconds late), so the client sustains 99% of the current rate;
* a hard cap: a log of the last ``ceil(rate) + 1`` start times forbids more than that many
  starts in any window of ``1 + jitter_margin`` seconds. So the ceiling holds in every 1-second
  window even as the server sees it, with up to 20 ms of jitter on the way, whatever the
  catching-up does.

An AIMD controller on top sets the current rate:

* a block (403, HTML where JSON was expected, 429, or a run of 5xx/timeouts) pauses every
  acquirer for a cool-down (``Retry-After`` if the server gave one) and cuts the rate
  multiplicatively, from the rate actually achieved when the block came;
* after a quiet period the rate climbs back additively towards the *target*: just below the rate
  of the last block, or the highest rate that has since run clean for a long time;
* above the target it only probes, with a small step after a long clean stretch, and each failed
  probe doubles the wait before the next one. So it settles just below the blocking rate;
* errors never speed it up.

``learned_rate`` (``None`` while no block was ever seen) is the rate to start from next time.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from met_harvester.metrics import HarvesterMetrics

log = logging.getLogger("met_harvester.ratelimit")

MAX_LOGGED_RATE = 10_000
"""Above this many requests/s the hard cap's log is not kept (pacing alone bounds windows)."""

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


@dataclass(frozen=True)
class AimdPolicy:
    """Tuning of the adaptive controller (seconds and requests/s).

    Attributes:
        decrease: factor applied to the achieved rate on a block.
        min_rate: floor of the current rate.
        safety: the target after a block is ``safety`` times the blocking rate.
        quiet_period: clean seconds between two additive steps below the target.
        climb_steps: additive steps from the cut rate back to the target.
        clean_period: clean seconds at one rate after which that rate counts as sustainable.
        probe_period: clean seconds at the target before probing above it (doubles per failure).
        probe_fraction: size of one probe step, as a fraction of the target.
        max_probe_period: upper bound of the doubled probe period.
        error_run: consecutive 5xx/timeouts that count as a block.
        observe_window: seconds over which the achieved rate is measured.
    """

    decrease: float = 0.5
    min_rate: float = 0.05
    safety: float = 0.9
    quiet_period: float = 30.0
    climb_steps: int = 4
    clean_period: float = 120.0
    probe_period: float = 600.0
    probe_fraction: float = 0.05
    max_probe_period: float = 6 * 3600.0
    error_run: int = 5
    observe_window: float = 10.0

    def scaled(self, factor: float) -> AimdPolicy:
        """The same policy with every duration multiplied by `factor` (for tests at small scale)."""
        return AimdPolicy(
            decrease=self.decrease,
            min_rate=self.min_rate,
            safety=self.safety,
            quiet_period=self.quiet_period * factor,
            climb_steps=self.climb_steps,
            clean_period=self.clean_period * factor,
            probe_period=self.probe_period * factor,
            probe_fraction=self.probe_fraction,
            max_probe_period=self.max_probe_period * factor,
            error_run=self.error_run,
            observe_window=self.observe_window * factor,
        )


class AdaptiveRateLimiter:
    """Schedules request start times at the current rate and adapts that rate to blocks.

    Args:
        ceiling: requests/s never exceeded (``--rate``).
        initial: rate to start at, e.g. the learned rate of the last run; ``None``: the ceiling.
        name: pool name, used in logs and metric labels.
        cooldown: seconds every acquirer waits after a block without ``Retry-After``.
        metrics: counts rate changes and exports the current rate.
        clock: monotonic clock in seconds.
        sleep: coroutine function sleeping for the given seconds.
        policy: AIMD tuning.
        headroom: pacing runs at ``rate * (1 - headroom)``.
        jitter_margin: the hard cap counts starts in windows of ``1 + jitter_margin`` seconds,
            so that much delay between our start and the server's clock is tolerated.
        catch_up: slots missed by up to this many seconds are still used (bounded by the cap).
    """

    def __init__(
        self,
        ceiling: float,
        *,
        initial: float | None = None,
        name: str = "api",
        cooldown: float = 60.0,
        metrics: HarvesterMetrics | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        policy: AimdPolicy | None = None,
        headroom: float = 0.01,
        jitter_margin: float = 0.02,
        catch_up: float = 0.25,
    ) -> None:
        if not ceiling > 0:
            raise ValueError(f"rate ceiling must be > 0, got {ceiling}")
        self.ceiling = float(ceiling)
        self.name = name
        self.cooldown = float(cooldown)
        self.policy = policy or AimdPolicy()
        if not 0 <= headroom < 0.03:
            raise ValueError(f"headroom must be in [0, 0.03), got {headroom}")
        self.headroom = headroom
        self.jitter_margin = jitter_margin
        self.catch_up = catch_up
        self._metrics = metrics
        self._clock = clock
        self._sleep = sleep
        self._lock = asyncio.Lock()

        self._floor = min(self.policy.min_rate, self.ceiling)
        self._clean_rate: float | None = None  # highest rate proven clean since last disproved
        self._block_rate: float | None = None  # achieved rate at the most recent block
        start = self.ceiling
        if initial is not None and 0 < initial < self.ceiling:
            start = max(self._floor, float(initial))
            self._clean_rate = start
        self.current_rate = start
        self._climb_step = self._default_step()
        self._probe_period = self.policy.probe_period

        now = clock()
        self.paused_until = -math.inf
        self._resumed_at = -math.inf  # end of the last pause
        self._last_change = now  # when the current rate was set
        self._last_trouble = -math.inf  # last error or block
        self._last_cut = -math.inf
        self._error_run = 0
        self.blocks = 0

        # schedule: slot k of the current segment starts at anchor + k / rate
        self._anchor = -math.inf
        self._slot_index = 0
        self._last_slot: float | None = None
        self._starts: deque[float] | None = None  # the hard cap's log; None above MAX_LOGGED_RATE
        self._resize_log()
        self._grants: deque[float] = deque()
        self._export_rate()

    # ------------------------------------------------------------------ public state
    @property
    def learned_rate(self) -> float | None:
        """The sustainable rate learned so far (what to start at next run); ``None``: no limit seen."""
        if self._block_rate is None and self._clean_rate is None:
            return None
        return self._target()

    def eta_seconds(self, remaining: int) -> float:
        """Honest seconds to finish `remaining` requests: at the learned rate, plus any pause."""
        rate = self.learned_rate if self.learned_rate is not None else self.current_rate
        wait = max(0.0, self.paused_until - self._clock())
        return wait + max(0, remaining) / rate

    def now(self) -> float:
        """The limiter's clock (pass it back as ``on_block(started_at=...)``)."""
        return self._clock()

    # ------------------------------------------------------------------ scheduling
    async def acquire(self) -> None:
        """Wait for the next start slot and for any cool-down; then the caller may send."""
        async with self._lock:
            while True:
                now = self._clock()
                if now < self.paused_until:
                    await self._sleep(self.paused_until - now)
                    continue
                spacing_rate = self.current_rate * (1.0 - self.headroom)
                interval = 1.0 / spacing_rate
                slot = self._anchor + self._slot_index / spacing_rate
                late_limit = interval if self._starts is None else max(interval, self.catch_up)
                if slot < now - late_limit:  # idle: restart the grid, one burst slot allowed
                    self._anchor = now - interval
                    self._slot_index = 0
                    slot = self._anchor
                if slot - now > 1e-9:
                    await self._sleep(slot - now)
                    continue  # the rate or a pause may have changed meanwhile
                starts = self._starts
                if starts is not None and len(starts) == starts.maxlen:
                    wait = starts[0] + 1.0 + self.jitter_margin - now
                    if wait > 1e-9:
                        await self._sleep(wait)
                        continue
                self._slot_index += 1
                self._last_slot = slot
                if starts is not None:
                    starts.append(now)
                self._record_grant(now)
                return

    # ------------------------------------------------------------------ feedback
    def on_success(self) -> None:
        """A normal answer (2xx, or a 404/400 JSON answer): may raise the rate after a quiet period."""
        self._error_run = 0
        now = self._clock()
        self._promote_clean(now)
        self._maybe_increase(now)

    def on_server_error(self) -> None:
        """A 5xx, timeout or dropped connection; a run of `policy.error_run` counts as a block."""
        now = self._clock()
        self._last_trouble = now
        if now < self.paused_until:
            return
        self._error_run += 1
        if self._error_run >= self.policy.error_run:
            self._error_run = 0
            self._block(now, None, f"{self.policy.error_run} server errors in a row", None)

    def on_block(
        self, retry_after: float | None = None, *, started_at: float | None = None
    ) -> None:
        """The server refused us: pause every acquirer and cut the rate.

        Args:
            retry_after: seconds from a ``Retry-After`` header; else `cooldown` is used.
            started_at: clock time the blocked request started; a request started before the
                last cut is an echo of the block already handled and changes nothing.
        """
        self._block(self._clock(), retry_after, "blocked", started_at)

    # ------------------------------------------------------------------ internals
    def _target(self) -> float:
        if self._block_rate is None and self._clean_rate is None:
            return self.ceiling
        target = 0.0
        if self._block_rate is not None:
            target = self.policy.safety * self._block_rate
        if self._clean_rate is not None and (
            self._block_rate is None or self._clean_rate < self._block_rate
        ):
            target = max(target, self._clean_rate)
        return min(self.ceiling, max(self._floor, target))

    def _default_step(self) -> float:
        return max(self._floor, (self._target() - self.current_rate) / self.policy.climb_steps)

    def _record_grant(self, now: float) -> None:
        self._grants.append(now)
        horizon = now - self.policy.observe_window
        while self._grants and self._grants[0] < horizon:
            self._grants.popleft()

    def _observed(self, now: float) -> float | None:
        start = max(now - self.policy.observe_window, self._resumed_at)
        since = [t for t in self._grants if t >= start]
        if len(since) < 2 or now - since[0] < min(1.0, self.policy.observe_window / 2):
            return None
        return (len(since) - 1) / (now - since[0])

    def _block(
        self, now: float, retry_after: float | None, reason: str, started_at: float | None
    ) -> None:
        pause = self.cooldown if retry_after is None else max(0.0, float(retry_after))
        self._last_trouble = now
        if started_at is not None and started_at <= self._last_cut:
            return  # answer to a request sent before the cut we already made
        if now < self.paused_until:
            if retry_after is not None and now + pause > self.paused_until:
                self.paused_until = now + pause
                self._resumed_at = self.paused_until
            return
        self.blocks += 1
        observed = self._observed(now)
        achieved = self.current_rate if observed is None else min(self.current_rate, observed)
        old_target = self._target()
        if self.current_rate > old_target * (1 + 1e-9):  # a failed probe: wait longer next time
            self._probe_period = min(self._probe_period * 2, self.policy.max_probe_period)
        self._block_rate = achieved
        if self._clean_rate is not None and self._clean_rate >= achieved:
            self._clean_rate = None  # the "clean" rate has just been blocked
        new_rate = max(self._floor, self.policy.decrease * achieved)
        self.paused_until = now + pause
        self._resumed_at = self.paused_until
        self._last_cut = now
        self._error_run = 0
        log.warning(
            "%s: %s at %.3g req/s: pausing %.1fs, rate %.3g -> %.3g req/s (learned %.3g)",
            self.name,
            reason,
            achieved,
            pause,
            self.current_rate,
            new_rate,
            self._target(),
            extra={"pool": self.name, "pause_s": pause},
        )
        self._set_rate(new_rate, now, "down")
        self._climb_step = self._default_step()

    def _promote_clean(self, now: float) -> None:
        if self._block_rate is None and self._clean_rate is None:
            return  # never throttled: nothing to learn
        if self._clean_rate is not None and self.current_rate <= self._clean_rate:
            return
        clean_since = max(self._last_change, self._last_trouble, self._resumed_at)
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
        quiet = now - max(self._last_change, self._last_trouble, self._resumed_at)
        target = self._target()
        if self.current_rate < target * (1 - 1e-9):
            if quiet >= self.policy.quiet_period:
                self._set_rate(min(target, self.current_rate + self._climb_step), now, "up")
        elif quiet >= self._probe_period:
            step = max(self._floor, self.policy.probe_fraction * target)
            self._set_rate(min(self.ceiling, self.current_rate + step), now, "up")

    def _set_rate(self, rate: float, now: float, direction: str) -> None:
        rate = min(self.ceiling, max(self._floor, rate))
        if rate == self.current_rate:
            return
        if direction == "up":
            log.info(
                "%s: rate %.3g -> %.3g req/s (target %.3g)",
                self.name,
                self.current_rate,
                rate,
                self._target(),
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
        old = self._starts or ()
        self._starts = deque(old, maxlen=size)

    def _export_rate(self) -> None:
        if self._metrics is not None:
            self._metrics.current_rate.labels(pool=self.name).set(self.current_rate)
