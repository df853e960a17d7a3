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
from met_harvester.ratelimit import AdaptiveRateLimiter, AimdPolicy, LimiterState

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


@pytest.mark.parametrize("rate", [1.0, 40.0, 80.0])
async def test_no_burst_after_a_stall(rate: float) -> None:
    """After the event loop (or the caller) stalls for a few slots and 2 s, starts go on evenly
    spaced: the slots missed are not caught up."""
    clock = FakeClock()
    limiter = make(rate, clock)
    grants = await run_workers(limiter, clock, n=int(rate * 3) + 2, workers=8)
    clock.now += 2.0 + 3.0 / rate
    after = await run_workers(limiter, clock, n=int(rate * 3) + 2, workers=8)
    interval = 1.0 / (rate * (1 - limiter.headroom))
    gaps = [b - a for a, b in itertools.pairwise(grants + after)]
    assert min(gaps) >= interval * (1 - 1e-6)
    assert max_in_window(grants + after) <= math.ceil(rate) + 1


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
    # every slot used from the first: n starts take (n - 1) intervals, no burst at all
    assert grants[-1] - grants[0] == pytest.approx((len(grants) - 1) / (80 * 0.99), abs=1e-6)


async def acquire_at(limiter: AdaptiveRateLimiter, clock: FakeClock) -> float:
    """One grant; returns its time."""
    return await limiter.acquire()


async def warm_up(limiter: AdaptiveRateLimiter, clock: FakeClock, seconds: float) -> None:
    """`seconds` of clean answers at the current rate (so the achieved rate is known)."""
    end = clock() + seconds
    while clock() < end:
        started = await limiter.acquire()
        limiter.on_success(started_at=started)


async def test_a_block_answer_stops_the_pool_and_one_probe_tells_a_stray() -> None:
    clock = FakeClock()
    metrics = HarvesterMetrics()
    limiter = make(40, clock, cooldown=2.0, metrics=metrics)
    await warm_up(limiter, clock, 3.0)
    blocked_at = clock()
    limiter.on_block(started_at=blocked_at - 0.01)
    assert limiter.paused and limiter.current_rate == 40
    probe = await limiter.acquire()  # the one probe, 2 s later
    assert probe == pytest.approx(blocked_at + 2.0)
    waiting = asyncio.create_task(limiter.acquire())  # everyone else waits for the probe
    for _ in range(5):
        await asyncio.sleep(0)
    assert not waiting.done()
    limiter.on_success(started_at=probe)  # it passed: the block answer was stray
    after = await waiting
    assert not limiter.paused and limiter.strays == 1 and limiter.blocks == 0
    assert limiter.current_rate == 40  # no cut for a stray (the policy allows a mild one)
    assert after >= probe + 1 / 40 * 0.99  # no burst after the pause
    assert metrics.registry.get_sample_value(
        "met_throttle_changes_total", {"pool": "api", "direction": "down"}
    ) in (None, 0.0)


async def test_a_blocked_probe_is_a_real_block_cut_and_probed_at_growing_intervals() -> None:
    clock = FakeClock()
    limiter = make(40, clock, cooldown=2.0)
    await warm_up(limiter, clock, 3.0)
    start = clock()
    limiter.on_block(started_at=start - 0.01)
    probes = []
    for _ in range(4):  # the firewall keeps refusing
        probe = await limiter.acquire()
        probes.append(probe - start)
        limiter.on_block(started_at=probe)
    assert limiter.blocks == 1 and limiter.current_rate == pytest.approx(20.0, rel=0.02)
    gaps = [b - a for a, b in itertools.pairwise([0.0, *probes])]
    assert gaps[0] == pytest.approx(2.0) and gaps[1] == pytest.approx(2.0)
    assert all(b > a for a, b in itertools.pairwise(gaps[1:]))  # growing
    probe = await limiter.acquire()
    limiter.on_success(started_at=probe)
    assert not limiter.paused and limiter.block_seconds == pytest.approx(probe - start)
    assert limiter.learned_rate == pytest.approx(0.9 * 40, rel=0.02)


async def test_the_learned_block_length_is_where_the_next_block_is_probed() -> None:
    """A 60 s block costs about 60 s once its length is known (and a 3 s one about 3 s)."""
    for length in (60.0, 3.0):
        clock = FakeClock()
        limiter = make(10, clock, cooldown=2.0)
        firewall_until = -math.inf
        costs = []
        for _ in range(3):
            await warm_up(limiter, clock, 30.0)
            start = clock()
            firewall_until = start + length
            limiter.on_block(started_at=start - 0.01)
            while True:
                probe = await limiter.acquire()
                if probe < firewall_until:
                    limiter.on_block(started_at=probe)
                    continue
                limiter.on_success(started_at=probe)
                break
            costs.append(probe - start)
        assert costs[0] <= 1.5 * length + 2.0  # first time: growing intervals overshoot
        assert costs[-1] <= length * 1.1 + 2.0  # then near the learned length
        assert limiter.block_seconds is not None


async def test_echoes_of_one_block_and_answers_from_before_it_prove_nothing() -> None:
    clock = FakeClock()
    limiter = make(40, clock, cooldown=2.0)
    await warm_up(limiter, clock, 3.0)
    sent = clock() - 0.05
    limiter.on_block(started_at=sent)
    for _ in range(3):  # other requests in flight come back: blocked, or fine
        limiter.on_block(started_at=sent)
        limiter.on_success(started_at=sent)
    assert limiter.paused and limiter.blocks == 0
    probe = await limiter.acquire()
    limiter.on_success(started_at=probe)
    limiter.on_block(started_at=sent)  # a late echo after the pool resumed
    assert not limiter.paused and limiter.strays == 1 and limiter.blocks == 0


async def test_most_requests_in_flight_refused_is_a_block_even_if_the_probe_passes() -> None:
    """A block shorter than the first pause: the probe passes, but the requests that were in
    flight came back refused, so it was a real block after all."""
    clock = FakeClock()
    limiter = make(40, clock, cooldown=2.0)
    await warm_up(limiter, clock, 3.0)
    sent = clock() - 0.05
    for _ in range(6):
        limiter.on_block(started_at=sent)
    probe = await limiter.acquire()
    limiter.on_success(started_at=probe)
    assert limiter.blocks == 1 and limiter.current_rate == pytest.approx(20.0, rel=0.02)


async def test_retry_after_is_honoured_instead_of_the_first_pause() -> None:
    clock = FakeClock()
    limiter = make(10, clock, cooldown=2.0)
    started = await limiter.acquire()
    at = clock()
    limiter.on_block(retry_after=5.0, started_at=started)
    probe = await limiter.acquire()
    assert probe == pytest.approx(at + 5.0)
    limiter.on_block(retry_after=30.0, started_at=probe)  # blocked again: wait what it says
    probe2 = await limiter.acquire()
    assert probe2 - probe == pytest.approx(30.0)


async def test_a_run_of_server_errors_is_a_block_answer_and_errors_never_raise_the_rate() -> None:
    clock = FakeClock()
    policy = AimdPolicy(quiet_period=1.0, error_run=5)
    limiter = make(20, clock, initial=10.0, cooldown=3.0, policy=policy)
    for _ in range(4):
        clock.now += 10.0
        limiter.on_server_error()
        assert limiter.current_rate == 10.0 and not limiter.paused
    for _ in range(5):
        clock.now += 0.1
        limiter.on_server_error()
    assert limiter.paused
    probe = await limiter.acquire()
    limiter.on_server_error(started_at=probe)  # the outage goes on: a real block
    assert limiter.blocks == 1 and limiter.current_rate == pytest.approx(5.0)


async def test_nothing_learned_climbs_one_small_step_per_long_clean_stretch() -> None:
    clock = FakeClock()
    limiter = make(80, clock, initial=1.0)
    assert limiter.current_rate == 1.0 and limiter.learned_rate is None
    rates = [1.0]
    for _ in range(1800):  # 30 min of clean answers at 1/s
        clock.now += 1.0
        limiter.on_success()
        if limiter.current_rate != rates[-1]:
            rates.append(limiter.current_rate)
    steps = [b - a for a, b in itertools.pairwise(rates)]
    assert steps and all(s == pytest.approx(AimdPolicy().climb_step) for s in steps)
    assert len(steps) <= 1800 / AimdPolicy().probe_period  # one per clean stretch, no more


async def test_additive_recovery_to_just_below_the_blocking_rate() -> None:
    clock = FakeClock()
    policy = AimdPolicy(quiet_period=30.0, climb_steps=4, clean_period=1e9, probe_period=1e9)
    limiter = make(80, clock, cooldown=2.0, policy=policy)
    await warm_up(limiter, clock, 5.0)
    limiter.on_block(started_at=clock() - 0.01)
    probe = await limiter.acquire()
    limiter.on_block(started_at=probe)
    probe = await limiter.acquire()
    limiter.on_success(started_at=probe)
    assert limiter.current_rate == pytest.approx(40.0, rel=0.02)
    target = limiter.learned_rate
    assert target == pytest.approx(0.9 * 80, rel=0.02)
    rates = [limiter.current_rate]
    for _ in range(400):  # 400 s of clean answers, one per second
        clock.now += 1.0
        limiter.on_success()
        if limiter.current_rate != rates[-1]:
            rates.append(limiter.current_rate)
    steps = [b - a for a, b in itertools.pairwise(rates)]
    assert len(steps) == 4 and all(s == pytest.approx(steps[0]) for s in steps)  # additive
    assert rates[-1] == pytest.approx(target) and rates[-1] < 80


async def test_never_faster_than_ceiling_even_when_climbing_for_hours() -> None:
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


async def test_state_round_trip_starts_where_the_last_run_was() -> None:
    clock = FakeClock()
    limiter = make(40, clock, cooldown=2.0)
    await warm_up(limiter, clock, 3.0)
    limiter.on_block(started_at=clock() - 0.01)
    probe = await limiter.acquire()
    limiter.on_block(started_at=probe)
    probe = await limiter.acquire()
    limiter.on_success(started_at=probe)
    saved = LimiterState.from_dict(limiter.state().as_dict())
    assert saved is not None and saved.blocks == 1 and saved.block_seconds is not None
    again = make(40, clock, state=saved)
    assert again.current_rate == pytest.approx(limiter.current_rate, rel=1e-3)
    assert again.learned_rate == pytest.approx(limiter.learned_rate, rel=1e-3)
    assert again.block_seconds == pytest.approx(limiter.block_seconds, rel=1e-3)
    assert make(80, clock, initial=500.0).current_rate == 80
    assert LimiterState.from_dict({"current_rate": "fast"}) is None
    assert LimiterState.from_dict([1, 2]) is None


async def test_eta_counts_the_current_rate_and_an_expected_block() -> None:
    clock = FakeClock()
    limiter = make(80, clock, cooldown=2.0)
    assert limiter.eta_seconds(8000) == pytest.approx(100.0)
    limiter.on_block()
    assert limiter.eta_seconds(8000) == pytest.approx(102.0)


async def test_every_decision_is_logged_once_with_its_numbers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    limiter = make(10, clock, cooldown=2.0)
    with caplog.at_level(logging.INFO, logger="met_harvester.ratelimit"):
        await warm_up(limiter, clock, 4.0)
        limiter.on_block(started_at=clock() - 0.01)
        probe = await limiter.acquire()
        limiter.on_success(started_at=probe)  # stray
        limiter.on_block(started_at=clock())
        probe = await limiter.acquire()
        limiter.on_block(started_at=probe)  # real
        probe = await limiter.acquire()
        limiter.on_success(started_at=probe)
    messages = [r.getMessage() for r in caplog.records if r.name == "met_harvester.ratelimit"]
    assert sum("pool stopped, one probe in 2.0s" in m for m in messages) == 2
    assert sum("stray" in m for m in messages) == 1
    assert sum("a real block at" in m and "-> 5" in m for m in messages) == 1
    assert sum("block lifted after" in m and "learned block length" in m for m in messages) == 1


async def _simulate(
    limiter: AdaptiveRateLimiter,
    clock: FakeClock,
    *,
    max_requests: int,
    window: float,
    block_for: float,
    duration: float,
) -> tuple[list[float], list[float], list[float]]:
    """Drive `limiter` against a rolling-window firewall: more than `max_requests` in any
    `window` seconds blocks for `block_for` seconds; requests during a block count in the
    window too. Returns (grant times, times of block answers, times blocks began)."""
    recent: deque[float] = deque()
    blocked_until = -math.inf
    grants: list[float] = []
    refused: list[float] = []
    began: list[float] = []
    end = clock() + duration
    while clock() < end:
        now = await limiter.acquire()
        grants.append(now)
        while recent and recent[0] <= now - window:
            recent.popleft()
        recent.append(now)
        if now < blocked_until:
            refused.append(now)
            limiter.on_block(started_at=now)
        elif len(recent) > max_requests:
            blocked_until = now + block_for
            began.append(now)
            recent.clear()
            refused.append(now)
            limiter.on_block(started_at=now)
        else:
            limiter.on_success(started_at=now)
    return grants, refused, began


async def test_polite_start_against_a_slow_rolling_window_firewall() -> None:
    """Defaults (start at 1/s) against more than 45 requests in 30 s (1.5/s), 60 s blocks:
    no block answer in the first 90 s, and few blocks per hour later on."""
    clock = FakeClock()
    limiter = make(80, clock, initial=1.0)
    start = clock()
    grants, refused, began = await _simulate(
        limiter, clock, max_requests=45, window=30.0, block_for=60.0, duration=4 * 3600
    )
    assert not [t for t in refused if t < start + 90]
    assert len([t for t in grants if t < start + 90]) >= 85
    assert len([t for t in began if t > clock() - 2 * 3600]) <= 1  # ever rarer blocks
    late = [g for g in grants if g > clock() - 3600]
    assert len(late) / 3600 >= 0.6 * 1.5


async def test_settles_below_a_met_like_firewall_from_the_documented_ceiling() -> None:
    """Started at 80/s against more than 30 in 10 s (3/s): settles below, blocks ever rarer."""
    clock = FakeClock()
    limiter = make(80, clock)
    grants, refused, began = await _simulate(
        limiter, clock, max_requests=30, window=10.0, block_for=60.0, duration=4 * 3600
    )
    learned = limiter.learned_rate
    assert learned is not None and 0.5 * 3.0 <= learned < 3.0
    assert len([b for b in began if b > clock() - 3600]) <= 1
    assert len(refused) <= 6 * len(began)  # a block costs a few probes, not a hammering
    late = [g for g in grants if g > clock() - 3600]
    assert len(late) / 3600 >= 0.5 * 3.0
    assert limiter.block_seconds == pytest.approx(60.0, abs=15.0)


async def test_a_429_probe_says_nothing_about_a_block_page_and_two_429s_are_a_block() -> None:
    """Random 429s (with Retry-After) must not turn stray block pages into cuts; a rate
    limiter that answers 429 twice in a row is a real block."""
    clock = FakeClock()
    limiter = make(40, clock, cooldown=2.0)
    await warm_up(limiter, clock, 3.0)
    limiter.on_block(started_at=clock() - 0.01)  # a block page
    probe = await limiter.acquire()
    limiter.on_block(retry_after=1.0, started_at=probe)  # the probe met a random 429
    assert limiter.blocks == 0 and limiter.paused
    probe = await limiter.acquire()
    limiter.on_success(started_at=probe)
    assert limiter.strays == 1 and limiter.blocks == 0 and limiter.current_rate == 40
    await warm_up(limiter, clock, 3.0)
    limiter.on_block(retry_after=1.0, started_at=clock() - 0.01)  # a 429
    probe = await limiter.acquire()
    limiter.on_block(retry_after=1.0, started_at=probe)  # and again: a real block
    assert limiter.blocks == 1 and limiter.current_rate == pytest.approx(20.0, rel=0.02)


async def test_a_blocked_probe_is_doubted_once_when_most_requests_in_flight_passed() -> None:
    """Random faults: a 429 (or a stray page) opens an incident, the other requests in flight
    come back fine, and the probe happens to meet one more random refusal. That is not a
    block: one more probe decides, and only a second refusal cuts the rate."""
    clock = FakeClock()
    limiter = make(40, clock, cooldown=2.0)
    await warm_up(limiter, clock, 3.0)
    sent = clock() - 0.05
    limiter.on_block(retry_after=1.0, started_at=sent)  # a random 429
    for _ in range(5):  # the rest of what was in flight passed
        limiter.on_success(started_at=sent)
    probe = await limiter.acquire()
    limiter.on_block(retry_after=1.0, started_at=probe)  # the probe meets another 429
    assert limiter.paused and limiter.blocks == 0 and limiter.current_rate == 40
    second = await limiter.acquire()
    assert second - probe == pytest.approx(2.0)  # the pool stayed stopped in between
    limiter.on_success(started_at=second)
    assert not limiter.paused and limiter.blocks == 0 and limiter.current_rate == 40

    await warm_up(limiter, clock, 3.0)
    sent = clock() - 0.05
    limiter.on_block(started_at=sent)  # a block page; what was in flight passed
    for _ in range(5):
        limiter.on_success(started_at=sent)
    for _ in range(2):  # two refused probes in a row: a real block after all
        probe = await limiter.acquire()
        limiter.on_block(started_at=probe)
    assert limiter.blocks == 1 and limiter.current_rate == pytest.approx(20.0, rel=0.02)


async def test_a_blocked_probe_confirms_at_once_when_what_was_in_flight_was_refused() -> None:
    clock = FakeClock()
    limiter = make(40, clock, cooldown=2.0)
    await warm_up(limiter, clock, 3.0)
    sent = clock() - 0.05
    limiter.on_block(started_at=sent)
    for _ in range(4):
        limiter.on_block(started_at=sent)
    limiter.on_success(started_at=sent)
    probe = await limiter.acquire()
    limiter.on_block(started_at=probe)
    assert limiter.blocks == 1 and limiter.current_rate == pytest.approx(20.0, rel=0.02)


async def test_after_mostly_stray_block_answers_one_refused_probe_is_not_yet_a_block() -> None:
    """Low latency, nothing in flight to tell: the history does. A server whose block answers
    were mostly stray refuses at random, so a refused probe is probed once more."""
    clock = FakeClock()
    limiter = make(40, clock, cooldown=2.0)
    for _ in range(5):  # five stray pages, each followed by a passing probe
        await warm_up(limiter, clock, 3.0)
        limiter.on_block(started_at=clock() - 0.01)
        limiter.on_success(started_at=await limiter.acquire())
    assert limiter.strays == 5 and limiter.blocks == 0
    await warm_up(limiter, clock, 3.0)
    limiter.on_block(started_at=clock() - 0.01)
    limiter.on_block(started_at=await limiter.acquire())  # refused: a random one, or a block?
    assert limiter.paused and limiter.blocks == 0 and limiter.current_rate == 40
    limiter.on_success(started_at=await limiter.acquire())
    assert not limiter.paused and limiter.blocks == 0 and limiter.strays == 6


async def test_after_mostly_stray_answers_a_block_must_come_back_twice_in_a_row() -> None:
    """Two block answers within a few answers of each other: on a server that refuses at
    random that happens by chance, so it takes a second time in a row to be a short block."""
    clock = FakeClock()
    limiter = make(40, clock, cooldown=2.0)
    for _ in range(5):  # stray pages with plenty of good answers between them
        await warm_up(limiter, clock, 3.0)
        limiter.on_block(started_at=clock() - 0.01)
        limiter.on_success(started_at=await limiter.acquire())
    limiter.on_block(started_at=await limiter.acquire())  # the very next answer: close call 1
    limiter.on_success(started_at=await limiter.acquire())
    assert limiter.blocks == 0 and limiter.strays == 6 and limiter.current_rate == 40
    limiter.on_block(started_at=await limiter.acquire())  # and again at once: a block after all
    limiter.on_success(started_at=await limiter.acquire())
    assert limiter.blocks == 1 and limiter.current_rate == pytest.approx(20.0, rel=0.02)
