"""Planning a sync pass: which ids to fetch, in which order (the fetching is `sync_fetch`).

Planning works on id sets, never offsets (the API's listing order is not stable):

* first pass (nothing synced yet) or ``--full``: every listed id (``--full`` refetches stored ones);
* incremental: listed ids the mirror lacks, plus ids the API lists as changed since the start of
  the last *completed* full/incremental run minus one day (the API's dates are day-granular), plus
  failed ids whose retry time has come;
* stored ids that left the full listing are marked withdrawn (never deleted).

Ids known from the CSV come in ``settings.priority`` order (`met_harvester.priority`), on full and
incremental passes alike; ids changed or due for retry come first on an incremental pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Any

import aiosqlite

from met_harvester.client import MetClient
from met_harvester.db import listing, records, state
from met_harvester.db.connection import iso_after, parse_iso, utc_now
from met_harvester.metrics import HarvesterMetrics
from met_harvester.priority import order_ids

log = logging.getLogger("met_harvester.sync")

MISSING_RECHECK_DAYS = 30
"""A listed id that answered 404 is asked again after this many days (or with --full)."""
OVERLAP = timedelta(days=1)
"""How far before the last completed run's start `metadataDate` reaches back."""
WITHDRAW_GUARD_FRACTION = 0.5
"""A listing that would withdraw more than this fraction of the mirror is not trusted."""


def unique(ids: Iterable[int]) -> list[int]:
    """`ids` without repeats, in first-seen order."""
    return list(dict.fromkeys(ids))


def metadata_date(since: str) -> date:
    """The `metadataDate` to ask for: the day of `since` minus the overlap."""
    return (parse_iso(since) - OVERLAP).date()


def choose_mode(
    *, full: bool, limit: int | None, object_ids: Sequence[int] | None, departments: Any, since: Any
) -> str:
    """The run's mode as recorded in `sync_runs`: ids, departments, limit, full or incremental."""
    if object_ids is not None:
        return "ids"
    if departments:
        return "departments"
    if limit is not None:
        return "limit"
    if full or since is None:
        return "full"
    return "incremental"


async def plan_ids(
    db: aiosqlite.Connection,
    client: MetClient,
    *,
    priority: str,
    counts: dict[str, int],
    full: bool,
    since: str | None,
    object_ids: Sequence[int] | None,
    departments: Sequence[int] | None,
    metrics: HarvesterMetrics | None = None,
) -> list[int]:
    """The ids to fetch, in order; marks vanished ids withdrawn on a full listing.

    Sets `listed`, `changed_listed`, `retries_due` and `withdrawn` (or `withdraw_skipped`) in
    `counts`. Raises `ListingError` when a listing cannot be had.
    """
    if object_ids is not None:
        return unique(object_ids)
    listed = list(await client.list_object_ids(department_ids=departments))
    counts["listed"] = await listing.load_listing(db, listed)
    del listed
    if not departments:
        await state.set_state(db, state.LISTING_TOTAL_KEY, counts["listed"])
        await _withdraw_vanished(db, counts, metrics)
        await _save_departments(db, client)
    if full:
        return await _prioritise(db, await listing.listed_ids(db), priority)
    now = utc_now()
    recheck = iso_after(now, -MISSING_RECHECK_DAYS * 86400.0)
    first: list[int] = []
    if since is not None:
        changed = await client.list_object_ids(
            metadata_date=metadata_date(since), department_ids=departments
        )
        counts["changed_listed"] = len(changed)
        first.extend(sorted(set(changed)))
    due = await listing.due_failure_ids(db, now=now)
    counts["retries_due"] = len(due)
    first.extend(due)
    unfetched = await listing.unfetched_listed_ids(db, now=now, missing_recheck_before=recheck)
    return unique(first + await _prioritise(db, unfetched, priority))


async def _withdraw_vanished(
    db: aiosqlite.Connection, counts: dict[str, int], metrics: HarvesterMetrics | None
) -> None:
    vanished = await listing.vanished_ids(db)
    if not vanished:
        return
    async with db.execute("SELECT COUNT(*) FROM objects WHERE withdrawn_at IS NULL") as cursor:
        row = await cursor.fetchone()
    stored = int(row[0]) if row else 0
    if len(vanished) > 20 and len(vanished) > WITHDRAW_GUARD_FRACTION * stored:
        log.warning(
            "listing lacks %d of %d stored objects; not trusting it to withdraw them",
            len(vanished),
            stored,
        )
        counts["withdraw_skipped"] = len(vanished)
        return
    withdrawn = await listing.mark_withdrawn(db, vanished)
    await db.commit()
    counts["withdrawn"] = withdrawn
    if metrics is not None:
        metrics.objects_withdrawn.inc(withdrawn)
    log.info("marked %d objects withdrawn (no longer listed)", withdrawn)


async def _save_departments(db: aiosqlite.Connection, client: MetClient) -> None:
    try:
        departments = await client.get_departments()
    except Exception as exc:  # departments are a nicety; the pass goes on
        log.warning("could not fetch /departments: %s", exc)
        return
    await records.save_departments(db, departments)
    await db.commit()


async def _prioritise(db: aiosqlite.Connection, ids: list[int], priority: str) -> list[int]:
    if not ids:
        return ids
    ordered: list[int] = await order_ids(db, ids, priority)
    return unique([*ordered, *ids])
