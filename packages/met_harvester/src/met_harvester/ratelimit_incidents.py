"""How a limiter handles the answers it is told about: block answers open an incident that
stops the pool, single probes decide whether it was stray or real (see `met_harvester.ratelimit`).

`IncidentHandling` is a mixin of `AdaptiveRateLimiter`: it holds the feedback methods
(`on_success`, `on_block`, `on_server_error`, `request_done`) and the incident logic; the rate
arithmetic it calls (`_set_rate`, `_target`, ...) lives in the limiter.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from met_harvester.ratelimit_policy import AimdPolicy

log = logging.getLogger("met_harvester.ratelimit")

RECENT_INCIDENTS = 10
"""How many recent incidents tell whether this server refuses at random (most were stray)."""

_STARTED: contextvars.ContextVar[tuple[object, float] | None] = contextvars.ContextVar(
    "met_harvester_request_started", default=None
)
"""When the calling task's last request was granted: the ``started_at`` of an answer reported
without one (each request of a pool runs in its own task)."""


class Abandoned(Exception):
    """The pool stopped before this request's turn came: nothing was sent."""


@dataclass
class _Incident:
    """A block answer under examination: the pool is stopped and probes decide."""

    started: float
    achieved: float  # rate achieved when the first block answer came
    reason: str
    probe_at: float
    wait: float  # the wait before the next probe after a blocked one
    probe_started: float | None = None
    blocked_probes: int = 0
    by_errors: bool = False  # opened by a run of server errors: a probe erring is blocked too
    echoes_blocked: int = 0  # answers to requests sent before it: blocked ...
    echoes_passed: int = 0  # ... and not
    told: bool = False  # the server said when to come back (Retry-After)
    told_refusals: int = 0  # probes answered with a Retry-After
    passes_before: int | None = None  # answers passed since the last incident (None: first)
    doubted: bool = False  # a blocked probe was doubted (most requests in flight passed)


class IncidentHandling:
    """Feedback and incidents of `AdaptiveRateLimiter` (which sets every attribute below)."""

    name: str
    policy: AimdPolicy
    first_probe: float
    current_rate: float
    block_seconds: float | None
    blocks: int
    strays: int
    _incident: _Incident | None
    _resumed_at: float
    _last_trouble: float
    _error_run: int
    _passes: int
    _outcomes: deque[bool]
    _close_calls: int
    _clean_rate: float | None
    _block_rate: float | None
    _probe_period: float
    _floor: float
    _anchor: float
    _slot_index: int
    _clock: Callable[[], float]

    def _set_rate(self, rate: float, now: float, direction: str) -> None:
        raise NotImplementedError

    def _target(self) -> float:
        raise NotImplementedError

    def _observed(self, now: float) -> float | None:
        raise NotImplementedError

    def _promote_clean(self, now: float) -> None:
        raise NotImplementedError

    def _maybe_increase(self, now: float) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ feedback
    def request_done(self) -> None:
        """The calling task's last request is over. If it was the probe and its answer was
        reported as neither a block nor a server error (say a 404, or a body refused for its
        content), the probe passed: the server answered."""
        inc = self._incident
        mine = _started(None)
        if inc is not None and mine is not None and inc.probe_started == mine:
            self._probe_passed(inc, self._clock())

    def on_success(self, *, started_at: float | None = None) -> None:
        """A normal answer (2xx, or a JSON 4xx): passes a probe, or may raise the rate."""
        now = self._clock()
        inc = self._incident
        if inc is not None:
            if self._is_probe(inc, _started(started_at)):
                self._probe_passed(inc, now)
            else:  # an answer to a request sent before the block answer
                inc.echoes_passed += 1
            return
        self._error_run = 0
        self._passes += 1
        self._promote_clean(now)
        self._maybe_increase(now)

    def on_server_error(self, *, started_at: float | None = None) -> None:
        """A 5xx, timeout or dropped connection; a run of `policy.error_run` is a block answer."""
        now = self._clock()
        inc = self._incident
        if inc is not None:
            if not self._is_probe(inc, _started(started_at)):
                return
            if inc.by_errors:  # the trouble goes on: like a blocked probe
                self._probe_blocked(inc, now, None)
            else:  # inconclusive: probe again after a short pause
                inc.probe_started = None
                inc.probe_at = now + self.first_probe
            return
        self._error_run += 1
        if self._error_run >= self.policy.error_run:
            self._error_run = 0
            self._open(now, None, f"{self.policy.error_run} server errors in a row")
            assert self._incident is not None
            self._incident.by_errors = True

    def on_block(
        self,
        retry_after: float | None = None,
        *,
        started_at: float | None = None,
        reason: str = "block answer",
    ) -> None:
        """A block answer (403, HTML instead of JSON, 429): stop the pool and probe.

        Args:
            retry_after: seconds from a ``Retry-After`` header: the probe waits that long.
            started_at: what `acquire` returned for the answered request; an answer to a
                request sent before the last incident ended is an echo and changes nothing.
            reason: a few words for the log line.
        """
        now = self._clock()
        inc = self._incident
        started_at = _started(started_at)
        if inc is not None:
            if self._is_probe(inc, started_at):
                self._probe_refused(inc, now, retry_after)
                return
            inc.echoes_blocked += 1
            if retry_after is not None:
                inc.probe_at = max(inc.probe_at, now + retry_after)
            return
        if started_at is not None and started_at < self._resumed_at:
            return
        self._open(now, retry_after, reason)

    # ------------------------------------------------------------------ incidents
    @staticmethod
    def _is_probe(inc: _Incident, started_at: float | None) -> bool:
        if inc.probe_started is None:
            return False
        return started_at is None or started_at >= inc.probe_started

    def _open(self, now: float, retry_after: float | None, reason: str) -> None:
        observed = self._observed(now)
        achieved = self.current_rate if observed is None else min(self.current_rate, observed)
        pause = self.first_probe if retry_after is None else max(0.0, retry_after)
        self._incident = _Incident(now, achieved, reason, now + pause, self.first_probe)
        self._incident.told = retry_after is not None
        self._incident.told_refusals = int(retry_after is not None)
        if self._resumed_at > -math.inf:
            self._incident.passes_before = self._passes
        log.warning(
            "%s: %s at %.3g req/s: pool stopped, one probe in %.1fs%s",
            self.name,
            reason,
            achieved,
            pause,
            " (Retry-After)" if retry_after is not None else "",
            extra={"pool": self.name, "pause_s": pause},
        )

    def _probe_refused(self, inc: _Incident, now: float, retry_after: float | None) -> None:
        """The probe got a block answer. A `Retry-After` answer (a rate limiter's 429) to a
        probe after a block page proves nothing about the page; after a 429 it takes two in
        a row to count as a real block. Each waits what it says."""
        told = retry_after is not None
        if told:
            inc.told_refusals += 1
        if told and (not inc.told or (inc.told_refusals < 2 and not inc.blocked_probes)):
            inc.probe_started = None
            inc.probe_at = now + max(retry_after or 0.0, self.first_probe if not inc.told else 0.0)
            return
        self._probe_blocked(inc, now, retry_after)

    def _probe_blocked(self, inc: _Incident, now: float, retry_after: float | None) -> None:
        inc.probe_started = None
        if self._doubt(inc, now, retry_after):
            return
        inc.blocked_probes += 1
        if inc.blocked_probes == 1:
            self._confirm(inc, now)
            wait = inc.wait
            if self.block_seconds is not None:  # probe just before the learned length
                wait = max(wait, inc.started + self.policy.early_probe * self.block_seconds - now)
                inc.wait = max(self.first_probe, 0.05 * self.block_seconds)
        else:
            inc.wait = min(self.policy.max_probe_wait, inc.wait * self.policy.probe_growth)
            wait = inc.wait
        if retry_after is not None:
            wait = max(wait, retry_after)
        inc.probe_at = now + wait
        if inc.blocked_probes > 1:
            log.info(
                "%s: probe blocked, %.0fs into the block; next probe in %.1fs",
                self.name,
                now - inc.started,
                wait,
                extra={"pool": self.name},
            )

    def _doubt(self, inc: _Incident, now: float, retry_after: float | None) -> bool:
        """A first blocked probe while most requests that were in flight passed: on a server
        with random faults (a stray page, a 429 now and then) the probe may just have met one
        more. It is not yet a block: probe once more (the pool stays stopped, so doubting
        costs one request). The same when most recent incidents were stray: this server
        refuses at random, so one refused probe is weak evidence. A real block refuses what
        was in flight too and probes keep meeting it, so it is confirmed by the second probe,
        or at once where neither sign says otherwise."""
        if inc.blocked_probes or inc.doubted:
            return False
        total = inc.echoes_passed + inc.echoes_blocked
        if inc.echoes_passed > inc.echoes_blocked:
            why = f"{inc.echoes_passed} of {total} requests in flight passed"
        elif self._mostly_stray():
            why = (
                f"{sum(self._outcomes)} of the last {len(self._outcomes)} block answers were stray"
            )
        else:
            return False
        inc.doubted = True
        wait = max(self.first_probe, retry_after or 0.0)
        inc.probe_at = now + wait
        log.info(
            "%s: probe refused, but %s: probing once more in %.1fs before calling it a block",
            self.name,
            why,
            wait,
            extra={"pool": self.name},
        )
        return True

    def _confirm(self, inc: _Incident, now: float, why: str = "probe blocked too") -> None:
        """A blocked probe: the block is real. Cut the rate and remember where it happened."""
        self.blocks += 1
        self._outcomes.append(False)
        if self.current_rate > self._target() * (1 + 1e-9):  # the climb above the target failed
            self._probe_period = min(self._probe_period * 2, self.policy.max_probe_period)
        self._block_rate = inc.achieved
        if self._clean_rate is not None and self._clean_rate >= inc.achieved:
            self._clean_rate = None  # the "clean" rate has just been blocked
        new_rate = max(self._floor, self.policy.decrease * inc.achieved)
        expected = "unknown" if self.block_seconds is None else f"{self.block_seconds:.0f}s"
        log.warning(
            "%s: %s: a real block at %.3g req/s; rate %.3g -> %.3g req/s "
            "(target %.3g); learned block length %s",
            self.name,
            why,
            inc.achieved,
            self.current_rate,
            new_rate,
            self.policy.safety * inc.achieved,
            expected,
            extra={"pool": self.name},
        )
        self._set_rate(new_rate, now, "down")

    def _probe_passed(self, inc: _Incident, now: float) -> None:
        self._incident = None
        self._resumed_at = now
        self._error_run = 0
        self._passes = 0
        short = self._short_block(inc)
        if short is not None:  # a real block that ended before the probe
            self._confirm(inc, now, f"probe passed, but {short}")
            self.block_seconds = now - inc.started
            self._last_trouble = now
        elif inc.blocked_probes == 0:
            self.strays += 1
            self._outcomes.append(True)
            new_rate = max(self._floor, self.current_rate * self.policy.stray_decrease)
            log.info(
                "%s: probe passed %.1fs after the %s: stray, resuming at %.3g req/s (was %.3g)",
                self.name,
                now - inc.started,
                inc.reason,
                new_rate,
                self.current_rate,
                extra={"pool": self.name},
            )
            self._set_rate(new_rate, now, "down")
        else:
            self.block_seconds = now - inc.started
            self._last_trouble = now
            log.warning(
                "%s: block lifted after %.1fs (%d probes blocked): learned block length %.1fs; "
                "resuming at %.3g req/s",
                self.name,
                self.block_seconds,
                inc.blocked_probes,
                self.block_seconds,
                self.current_rate,
                extra={"pool": self.name, "block_s": self.block_seconds},
            )
        self._anchor, self._slot_index = now, 1  # the probe took this slot; no burst follows

    def _short_block(self, inc: _Incident) -> str | None:
        """Why an incident whose probe passed at once was a real block after all, or None
        when it was stray: most requests in flight were refused too, or block answers keep
        coming after only a few answers passed (a block shorter than the first pause)."""
        if inc.blocked_probes or inc.told:
            return None
        if inc.echoes_blocked > inc.echoes_passed:
            total = inc.echoes_blocked + inc.echoes_passed
            return f"{inc.echoes_blocked} of {total} requests in flight refused too"
        close = inc.passes_before is not None and inc.passes_before < self.policy.stray_min_passes
        self._close_calls = self._close_calls + 1 if close else 0
        if close and (self._close_calls >= 2 or not self._mostly_stray()):
            return f"only {inc.passes_before} answers passed since the last block answer"
        return None

    def _mostly_stray(self) -> bool:
        """Were at least half of the recent incidents (4 or more) stray? Then this server
        refuses at random: one refused probe, or two block answers close together, are weak
        evidence of a block (a block keeps refusing, and comes back as soon as the pool does:
        a second time in a row confirms it)."""
        n = len(self._outcomes)
        return n >= 4 and 2 * sum(self._outcomes) >= n


def _started(started_at: float | None) -> float | None:
    """`started_at`, else when the calling task's last request was granted (a task created
    by one that made requests inherits its context, not its requests: the task must match)."""
    if started_at is not None:
        return started_at
    mine = _STARTED.get()
    if mine is None or mine[0] is not asyncio.current_task():
        return None
    return mine[1]
