"""`status`: what the mirror holds, how the last sync went, the API rate and an honest ETA.

`collect_status(db)` returns a JSON-ready dict. Its integer counts (`objects`, `withdrawn`,
`quarantined`, `failures`, `missing`, `tags`, `images`, ...) are defined once in `db.counts`,
which `/metrics` reads too; other parts of the harvester add their own keys with small edits here.
"""

from __future__ import annotations

from typing import Any

import aiosqlite

from met_harvester.db import counts as mirror
from met_harvester.db import limiter_state, runs, state, trouble
from met_harvester.priority import priority_status
from met_harvester.progress import format_eta


async def remaining_records(db: aiosqlite.Connection, counts: dict[str, Any]) -> int | None:
    """Records still to fetch: listed ids not yet answered (stored, missing or quarantined);
    a failed id is one of those, counted once. None before any full listing was seen."""
    total = await state.get_state_float(db, state.LISTING_TOTAL_KEY)
    if total is None:
        return None
    answered = counts["objects"] + counts["missing"] + counts["quarantined"]
    return max(0, int(total) - answered)


async def collect_status(db: aiosqlite.Connection) -> dict[str, Any]:
    """The mirror's status as a JSON-ready dict.

    Keys: the integer counts above (with `quarantined_due` and `failures_due`: due for a retry
    now), `quarantine_next_retry_at` / `failures_next_retry_at` (the earliest due time, None when
    none waits), `last_sync` ({run_id, start, end, mode, status, counts,
    error} or None), `rate` ({current, learned, ceiling} in requests/s, None when unknown),
    `remaining` (records left to fetch, None before the first listing) and `eta_seconds` (the
    remaining records at the learned rate, else the current rate, else the ceiling), and
    `limiter` ({"api": ..., "images": ...}: what each pool's limiter learned, see
    `met_harvester.ratelimit.LimiterState`, plus its ceiling and when it was saved; None for
    a pool that never ran).
    """
    status: dict[str, Any] = dict(await mirror.mirror_counts(db))
    status.update(await trouble.next_retries(db))
    status["last_sync"] = await runs.last_run(db)
    rate = {name: await state.get_state_float(db, key) for name, key in state.RATE_KEYS.items()}
    status["rate"] = rate
    status["limiter"] = await limiter_state.status(db)
    remaining = await remaining_records(db, status)
    status["remaining"] = remaining
    speed = rate["learned"] or rate["current"] or rate["ceiling"]
    status["eta_seconds"] = None if remaining is None or not speed else round(remaining / speed, 1)
    status["csv"] = await priority_status(db)  # CSV import and sync priority (issue 4)
    status.update(await mirror.image_counts(db))  # images, image_failures, ... (issue 3)
    return status


def _next(when: str | None) -> str:
    return f", next due {when}" if when else ""


def _rate_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}/s"


def _seconds_text(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}s"


def _limiter_text(pool: str, known: dict[str, Any] | None) -> str:
    """One line per pool: the rate it runs at, what it learned about blocks."""
    if not known:
        return f"limiter {pool:<7}never ran"
    paused = ", paused by a block when saved" if known.get("paused") else ""
    return (
        f"limiter {pool:<7}{_rate_text(known.get('current_rate'))} of "
        f"{_rate_text(known.get('ceiling'))}, clean {_rate_text(known.get('clean_rate'))}, "
        f"last block at {_rate_text(known.get('block_rate'))} lasting "
        f"{_seconds_text(known.get('block_seconds'))}, climb back-off "
        f"{_seconds_text(known.get('probe_period'))}, blocks {known.get('blocks', 0)}, "
        f"strays {known.get('strays', 0)}{paused}"
    )


def format_status(status: dict[str, Any]) -> str:
    """A short, readable summary of `collect_status` output for a terminal."""
    lines = [
        f"objects      {status['objects']:>10,}   withdrawn {status['withdrawn']:,}",
        f"tags         {status['tags']:>10,}   constituents {status['constituents']:,}",
        f"quarantined  {status['quarantined']:>10,}   due for retry now "
        f"{status['quarantined_due']:,}{_next(status.get('quarantine_next_retry_at'))}",
        f"missing      {status['missing']:>10,}   (the API's JSON 404)",
        f"failures     {status['failures']:>10,}   due for retry now {status['failures_due']:,}"
        f"{_next(status.get('failures_next_retry_at'))}",
    ]
    run = status.get("last_sync")
    if run:
        counts = run.get("counts") or {}
        brief = ", ".join(
            f"{k} {counts[k]}"
            for k in ("fetched", "new", "updated", "missing", "failed", "quarantined", "withdrawn")
            if k in counts
        )
        lines.append(
            f"last sync    #{run['run_id']} {run['mode']} {run['status']}, "
            f"{run['start']} .. {run['end'] or '(running)'}"
        )
        if brief:
            lines.append(f"             {brief}")
        if run.get("error"):
            lines.append(f"             error: {run['error']}")
    else:
        lines.append("last sync    never")
    rate = status["rate"]
    lines.append(
        f"rate         current {_rate_text(rate['current'])}, learned "
        f"{_rate_text(rate['learned'])}, ceiling {_rate_text(rate['ceiling'])}"
    )
    for pool, known in (status.get("limiter") or {}).items():
        lines.append(_limiter_text(pool, known))
    if "images" in status:  # issue 3
        lines.append(
            f"images       {status['images']:>10,}   failures {status['image_failures']:,}, "
            f"pending {status.get('images_pending', 0):,}, refused {status.get('images_refused', 0):,}"
        )
    remaining = status.get("remaining")
    if remaining is not None:
        lines.append(f"remaining    {remaining:>10,}   eta {format_eta(status.get('eta_seconds'))}")
    for key, value in status.items():
        if isinstance(value, dict) and key not in ("rate", "last_sync", "limiter"):
            parts = ", ".join(f"{k} {v}" for k, v in value.items() if not isinstance(v, dict))
            lines.append(f"{key:<12} {parts}")
    return "\n".join(lines)
