"""The two request pools of a sync, API and images, each with its own limiter from the settings
and what the last run learned (see `met_harvester.db.limiter_state`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from met_harvester.ratelimit import AdaptiveRateLimiter, LimiterState

if TYPE_CHECKING:
    from met_harvester.metrics import HarvesterMetrics
    from met_harvester.settings import HarvesterSettings

Pool = Literal["api", "images"]


def make_limiter(
    settings: HarvesterSettings,
    pool: Pool,
    state: LimiterState | None = None,
    *,
    metrics: HarvesterMetrics | None = None,
) -> AdaptiveRateLimiter:
    """The limiter of `pool`: ceiling `--rate` / `--image-rate`; it starts at an explicit
    initial rate, else at the rate the last run ran at (`state`), else at `start_rate`."""
    ceiling = settings.rate if pool == "api" else settings.image_rate
    explicit = settings.initial_rate if pool == "api" else settings.image_initial_rate
    initial = None if state is not None and explicit is None else settings.start_rate(pool)
    return AdaptiveRateLimiter(
        ceiling,
        initial=initial,
        state=state,
        name=pool,
        cooldown=settings.block_cooldown,
        metrics=metrics,
    )
