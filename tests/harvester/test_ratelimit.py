"""Unit tests of the adaptive rate limiter on a fake clock (no network, no real waiting)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import random
from collections import deque

import pytest

from met_harvester.metrics import HarvesterMetrics
from met_harvester.ratelimit import AdaptiveRateLimiter, AimdPolicy

EPS = 1e-9


class FakeClock:
    """A clock that only moves when someone sleeps; `oversleep` adds event-loop-like lateness."""

    def __init__(self, oversleep: float = 0.0, seed: int = 0) -> None:
        self.now = 1000.0
        self.oversleep = oversleep
        self._random = random.Random(seed)

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        late = self._random.uniform(0, self.oversleep) if self.oversleep else 0.0
        self.now += max(0.0, seconds) + late
        await asyncio.sleep(0)


def make(ceiling: float, clock: FakeClock, **kwargs: object) -> AdaptiveRateLimiter:
    return AdaptiveRateLimiter(ceiling, clock=clock, sleep=clock.sleep, **kwargs)  # type: ignore[arg-type]


def max_in_window(times: list[float], width: float = 1.0) -> int:
    """Most start times in any half-open window [t, t + width)."""
    times = sorted(times)
    best, j = 0, 0
    for i, start in enumerate(times):
        while j < len(times) and times[j] < start + width - EPS:
            j += 1
        best = max(best, j - i)
    return best


async def run_workers(
    limiter: AdaptiveRateLimiter, clock: FakeClock, n: int, workers: int, think: float = 0.0
) -> list[float]:
    """`workers` tasks acquire until `n` grants were made; each thinks up to `think` s between."""
    grants: list[float] = []
    rng = random.Random(1)

    async def worker() -> None:
        while len(grants) < n:
            await limiter.acquire()
            grants.append(clock())
            if think:
                await clock.sleep(rng.uniform(0, think))

    await asyncio.gather(*(worker() for _ in range(workers)))
    return grants


@pytest.mark.parametrize("rate", [0.7, 1.0, 2.5, 7.3, 40.0, 80.0])
async def test_ceiling_never_exceeded_in_any_one_second_window(rate: float) -> None:
    clock = FakeClock(oversleep=0.3 / rate)
    limiter = make(rate, clock)
    grants = await run_workers(limiter, clock, n=int(rate * 20) + 10, workers=16)
    assert max_in_window(grants) <= math.ceil(rate) + 1


@pytest.mark.parametrize("rate", [1.0, 40.0, 80.0])
async def test_ceiling_holds_with_idle_gaps_and_bursty_callers(rate: float) -> None:
    clock = FakeClock()
    limiter = make(rate, clock)
    grants = await run_workers(limiter, clock, n=int(rate * 20) + 10, workers=4, think=3.0 / rate)
    assert max_in_window(grants) <= math.ceil(rate) + 1


@pytest.mark.parametrize("rate", [1.0, 3.0, 40.0, 80.0])
async def test_ceiling_holds_at_the_server_despite_jitter_on_the_way(rate: float) -> None:
    clock = FakeClock(oversleep=0.5 / rate, seed=5)
    limiter = make(rate, clock, headroom=0.0)  # the hard cap alone must absorb the jitter
    grants = await run_workers(limiter, clock, n=int(rate * 30), workers=16)
    rng = random.Random(7)
    arrivals = [t + rng.uniform(0, 0.019) for t in grants]  # up to 19 ms on the way
    assert max_in_window(arrivals) <= math.ceil(rate) + 1


@pytest.mark.parametrize(
    ("rate", "late", "floor"), [(40.0, 0.03, 0.97), (80.0, 0.03, 0.97), (500.0, 0.02, 0.95)]
)
async def test_stalls_are_caught_up_without_breaking_the_cap(
    rate: float, late: float, floor: float
) -> None:
    """A busy event loop wakes the limiter up to `late` s late every time: the missed slots are
    used later, yet no 1-second window (even shifted by 15 ms of jitter) gets more than
    ceil(rate) + 1. (Without catching up, 80/s with 30 ms stalls sustains only 78%.)"""
    clock = FakeClock(oversleep=late, seed=11)
    limiter = make(rate, clock)
    grants = await run_workers(limiter, clock, n=int(rate * 20), workers=32)
    achieved = (len(grants) - 2) / (grants[-1] - grants[0])
    assert achieved >= floor * rate
    rng = random.Random(2)
    assert max_in_window(grants) <= math.ceil(rate) + 1
    assert max_in_window([t + rng.uniform(0, 0.015) for t in grants]) <= math.ceil(rate) + 1


@pytest.mark.parametrize("rate", [2.0, 40.0, 80.0])
async def test_sustains_at_least_97_percent_despite_late_wakeups(rate: float) -> None:
    clock = FakeClock(oversleep=0.5 / rate, seed=3)  # every wake-up up to half a slot late
    limiter = make(rate, clock)
    grants = await run_workers(limiter, clock, n=int(rate * 30), workers=20)
    achieved = (len(grants) - 2) / (grants[-1] - grants[0])  # less the one burst slot
    assert 0.97 * rate <= achieved <= rate * (1 - limiter.headroom) * (1 + 1e-9)


async def test_no_blocks_runs_at_ceiling_from_start_and_learns_nothing() -> None:
    clock = FakeClock()
    limiter = make(80, clock)
    grants = await run_workers(limiter, clock, n=400, workers=8)
    for _ in range(50):
        limiter.on_success()
    assert limiter.current_rate == 80
    assert limiter.learned_rate is None
    # every slot used from the first: n starts take (n - 2) intervals (one burst slot)
    assert grants[-1] - grants[0] == pytest.approx((len(grants) - 2) / (80 * 0.99), abs=1e-6)


async def test_block_pauses_every_acquirer_and_cuts_multiplicatively() -> None:
    clock = FakeClock()
    metrics = HarvesterMetrics()
    limiter = make(40, clock, cooldown=60.0, metrics=metrics)
    await run_workers(limiter, clock, n=120, workers=8)  # 3 s at 40/s: achieved rate is known
    blocked_at = clock()
    limiter.on_block()
    assert limiter.current_rate == pytest.approx(20.0, rel=0.02)
    assert limiter.paused_until == pytest.approx(blocked_at + 60.0)
    grants = await run_workers(limiter, clock, n=10, workers=5)
    assert min(grants) >= blocked_at + 60.0
    value = metrics.registry.get_sample_value(
        "met_throttle_changes_total", {"pool": "api", "direction": "down"}
    )
    assert value == 1
    gauge = metrics.registry.get_sample_value("met_current_rate", {"pool": "api"})
    assert gauge == limiter.current_rate


async def test_a_block_holds_back_acquirers_already_waiting_for_a_slot() -> None:
    clock = FakeClock(oversleep=0.002)
    limiter = make(40, clock, cooldown=5.0)
    grants: list[float] = []
    blocked_at: list[float] = []

    async def worker() -> None:
        while len(grants) < 300:
            await limiter.acquire()
            grants.append(clock())
            if len(grants) == 100:
                blocked_at.append(clock())
                limiter.on_block()

    await asyncio.gather(*(worker() for _ in range(8)))
    start, end = blocked_at[0], blocked_at[0] + 5.0
    assert not [t for t in grants if start < t < end]
    assert len([t for t in grants if t >= end]) >= 190


async def test_echoes_of_one_block_cut_only_once() -> None:
    clock = FakeClock()
    limiter = make(40, clock, cooldown=10.0)
    await run_workers(limiter, clock, n=80, workers=8)
    sent = clock()
    limiter.on_block(started_at=sent)
    rate = limiter.current_rate
    for _ in range(15):  # the other requests in flight come back blocked too
        limiter.on_block(started_at=sent)
    clock.now += 20  # pause over; a late answer to a request sent before the cut
    limiter.on_block(started_at=sent)
    assert limiter.current_rate == rate
    assert limiter.blocks == 1


async def test_retry_after_is_honoured_instead_of_cooldown() -> None:
    clock = FakeClock()
    limiter = make(10, clock, cooldown=60.0)
    await limiter.acquire()
    at = clock()
    limiter.on_block(retry_after=5.0)
    assert limiter.paused_until == pytest.approx(at + 5.0)
    await limiter.acquire()
    assert at + 5.0 <= clock() < at + 6.0
    limiter.on_block(retry_after=120.0)  # a longer Retry-After while paused extends the pause
    assert limiter.paused_until == pytest.approx(clock() + 120.0)


async def test_additive_recovery_to_just_below_the_blocking_rate() -> None:
    clock = FakeClock()
    policy = AimdPolicy(quiet_period=30.0, climb_steps=4, clean_period=1e9, probe_period=1e9)
    limiter = make(80, clock, cooldown=60.0, policy=policy)
    await run_workers(limiter, clock, n=400, workers=8)
    limiter.on_block()
    assert limiter.current_rate == pytest.approx(40.0, rel=0.02)
    target = limiter.learned_rate
    assert target == pytest.approx(0.9 * 80, rel=0.02)
    rates = [limiter.current_rate]
    clock.now = limiter.paused_until
    for _ in range(400):  # 400 s of clean answers, one per second
        clock.now += 1.0
        limiter.on_success()
        if limiter.current_rate != rates[-1]:
            rates.append(limiter.current_rate)
    steps = [b - a for a, b in itertools.pairwise(rates)]
    assert len(steps) == 4 and all(s == pytest.approx(steps[0]) for s in steps)  # additive
    assert rates[-1] == pytest.approx(target)
    assert rates[-1] < 80


async def test_errors_never_raise_the_rate_and_a_run_of_them_is_a_block() -> None:
    clock = FakeClock()
    policy = AimdPolicy(quiet_period=1.0, error_run=5)
    limiter = make(20, clock, initial=10.0, cooldown=30.0, policy=policy)
    for _ in range(4):
        clock.now += 10.0
        limiter.on_server_error()
        assert limiter.current_rate == 10.0
    limiter.on_success()  # right after an error: no quiet period yet, no increase
    assert limiter.current_rate == 10.0
    for _ in range(5):
        clock.now += 0.1
        limiter.on_server_error()
    assert limiter.current_rate == pytest.approx(5.0)
    assert limiter.paused_until == pytest.approx(clock() + 30.0)


async def test_never_faster_than_ceiling_even_when_probing_for_hours() -> None:
    clock = FakeClock()
    policy = AimdPolicy().scaled(0.01)
    limiter = make(5, clock, initial=4.0, policy=policy)
    for _ in range(100_000):
        clock.now += 0.05
        limiter.on_success()
        assert limiter.current_rate <= 5
    assert limiter.current_rate == 5
    grants = await run_workers(limiter, clock, n=200, workers=8)
    assert max_in_window(grants) <= 6


async def test_initial_rate_is_where_it_starts_and_what_it_knows() -> None:
    clock = FakeClock()
    limiter = make(80, clock, initial=1.2)
    assert limiter.current_rate == 1.2
    assert limiter.learned_rate == 1.2
    assert make(80, clock, initial=500.0).current_rate == 80
    assert make(80, clock, initial=500.0).learned_rate is None


async def test_eta_uses_learned_rate_and_pending_pause() -> None:
    clock = FakeClock()
    limiter = make(80, clock, cooldown=60.0)
    assert limiter.eta_seconds(8000) == pytest.approx(100.0)
    await run_workers(limiter, clock, n=400, workers=8)
    limiter.on_block()
    learned = limiter.learned_rate
    assert learned is not None
    assert limiter.eta_seconds(1000) == pytest.approx(60.0 + 1000 / learned)


async def test_every_change_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    policy = AimdPolicy(quiet_period=1.0, clean_period=1e9, probe_period=1e9)
    limiter = make(10, clock, cooldown=1.0, policy=policy)
    with caplog.at_level(logging.INFO, logger="met_harvester.ratelimit"):
        await run_workers(limiter, clock, n=40, workers=2)
        limiter.on_block()
        for _ in range(20):
            clock.now += 1.0
            limiter.on_success()
    messages = [r.getMessage() for r in caplog.records if r.name == "met_harvester.ratelimit"]
    assert any("blocked" in m and "10 -> 5" in m for m in messages)
    ups = [m for m in messages if "->" in m and "blocked" not in m]
    assert len(ups) == 4


async def _simulate(
    limiter: AdaptiveRateLimiter,
    clock: FakeClock,
    *,
    max_requests: int,
    window: float,
    block_for: float,
    duration: float,
) -> tuple[list[float], list[float]]:
    """Drive `limiter` against a firewall that blocks a client sending more than `max_requests`
    in any `window` seconds, for `block_for` seconds. Returns (grant times, block times)."""
    recent: deque[float] = deque()
    blocked_until = -math.inf
    grants: list[float] = []
    blocks: list[float] = []
    end = clock() + duration
    while clock() < end:
        await limiter.acquire()
        now = clock()
        grants.append(now)
        recent.append(now)
        while recent and recent[0] <= now - window:
            recent.popleft()
        if now < blocked_until:
            limiter.on_block(started_at=now)
        elif len(recent) > max_requests:
            blocked_until = now + block_for
            blocks.append(now)
            limiter.on_block(started_at=now)
        else:
            limiter.on_success()
    return grants, blocks


async def test_learned_rate_settles_just_below_a_met_like_firewall() -> None:
    """Met-like: more than 30 requests in 10 s blocks for 60 s (so 3/s is the real limit)."""
    clock = FakeClock()
    limiter = make(80, clock, cooldown=60.0)
    grants, blocks = await _simulate(
        limiter, clock, max_requests=30, window=10.0, block_for=60.0, duration=4 * 3600
    )
    learned = limiter.learned_rate
    assert learned is not None
    assert 0.6 * 3.0 <= learned < 3.0
    last_hour = [b for b in blocks if b > clock() - 3600]
    assert len(last_hour) <= 2  # only rare, ever rarer probes
    late = [g for g in grants if g > clock() - 3600]
    assert len(late) / 3600 >= 0.6 * 3.0
