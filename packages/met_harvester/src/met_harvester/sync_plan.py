"""Planning a sync pass: which ids to fetch, in which order (the fetching is `sync_fetch`).

Planning works on id sets, never offsets (the API's listing order is not stable):

* first pass (nothing synced yet) or ``--full``: every listed id (``--full`` refetches stored ones);
* incremental: listed ids the mirror lacks, plus ids the API lists as changed since the start of
  the last *completed* full/incremental run minus two days (the API's dates are day-granular and
  may be US Eastern), worked through in ascending order that survives restarts
  (`sync_window`), plus failed and quarantined ids whose retry time has come;
* stored ids that two consecutive trustworthy full listings lack are marked withdrawn, never
  deleted (`db.withdrawal`); an untrustworthy listing only finds new ids.

Ids known from the CSV come in ``settings.priority`` order (`met_harvester.priority`), on full and
incremental passes alike; ids changed or due for retry come first on an incremental pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Any

import aiosqlite

from met_harvester import sync_window
from met_harvester.client import MetClient
from met_harvester.db import listing, records, runs, state, withdrawal
from met_harvester.db.connection import iso_after, parse_iso, utc_now
from met_harvester.db.counts import count
from met_harvester.metrics import HarvesterMetrics
from met_harvester.priority import order_ids

log = logging.getLogger("met_harvester.sync")

MISSING_RECHECK_DAYS = 30
"""A listed id that answered 404 is asked again after this many days (or with --full)."""
OVERLAP = timedelta(days=2)
"""How far before the last completed run's start `metadataDate` reaches back: the API's dates
are days, and its "after this date" may be counted in US Eastern time, not UTC."""
WITHDRAW_GUARD_FRACTION = 0.5
"""Besides the trust checks: a listing that would withdraw more than this fraction of the
mirror at once is not trusted (matters before the first trustworthy listing)."""


def unique(ids: Iterable[int]) -> list[int]:
    """`ids` without repeats, in first-seen order."""
    return list(dict.fromkeys(ids))


def metadata_date(since: str, *, now: str | None = None) -> date:
    """The `metadataDate` to ask for: the UTC day of `since` (never later than now) minus the
    overlap."""
    moment = min(parse_iso(since), parse_iso(now or utc_now()))
    return (moment - OVERLAP).date()


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
    run_id: int | None = None,
    started_at: str | None = None,
    listing_margin: float = 0.02,
) -> list[int]:
    """The ids to fetch, in order; withdraws what two trustworthy full listings lack.

    Sets `listed`, `listing_trusted`, `changed_listed`, `changed_todo` (the changed ids, which
    come first, ascending), `changed_resumed`, `retries_due` and `withdrawn` (or
    `withdraw_skipped`) in `counts`. Raises `ListingError` when a listing cannot be had.
    """
    if object_ids is not None:
        return unique(object_ids)
    now = utc_now()
    full_listing = await client.list_objects(department_ids=departments)
    counts["listed"] = await listing.load_listing(db, full_listing.ids)
    if not departments:
        previous = await withdrawal.last_trusted_size(db)
        verdict = withdrawal.judge_listing(
            "full", counts["listed"], full_listing.total, previous, listing_margin
        )
        await _withdraw_vanished(db, counts, metrics, verdict, run_id)
        await state.set_state(db, state.LISTING_TOTAL_KEY, full_listing.total or counts["listed"])
        await db.commit()
        await _save_departments(db, client)
    del full_listing
    if full:
        return await _prioritise(db, await listing.listed_ids(db), priority)
    first: list[int] = []
    if since is not None:
        first = await _changed_ids(
            db,
            client,
            counts,
            since=since,
            now=now,
            began_at=started_at or now,
            run_id=run_id,
            departments=departments,
        )
        counts["changed_todo"] = len(first)
    due = await listing.due_failure_ids(db, now=now)
    due += await listing.due_quarantine_ids(db, now=now)
    counts["retries_due"] = len(due)
    first.extend(due)
    recheck = iso_after(now, -MISSING_RECHECK_DAYS * 86400.0)
    unfetched = await listing.unfetched_listed_ids(db, now=now, missing_recheck_before=recheck)
    return unique(first + await _prioritise(db, unfetched, priority))


async def _changed_ids(
    db: aiosqlite.Connection,
    client: MetClient,
    counts: dict[str, int],
    *,
    since: str,
    now: str,
    began_at: str,
    run_id: int | None,
    departments: Sequence[int] | None,
) -> list[int]:
    """The changed window's ids still to do, ascending (resuming an interrupted window)."""
    day = metadata_date(since, now=now)
    changed = await client.list_objects(metadata_date=day, department_ids=departments)
    ids = sorted(set(changed.ids))
    counts["changed_listed"] = len(ids)
    verdict = withdrawal.judge_listing("changed", len(ids), changed.total, None, 0.0)
    await withdrawal.record_check(db, verdict, run_id=run_id)
    if not verdict.trusted:
        log.warning("%s; its ids are fetched, and the window is asked again", verdict.describe())
    if departments or run_id is None:
        await db.commit()
        return ids
    window, todo = sync_window.resume(
        await sync_window.load_window(db), day.isoformat(), began_at, ids
    )
    counts["changed_resumed"] = len(ids) - len(todo)
    if counts["changed_resumed"]:
        log.info(
            "resuming the changed window of %s after id %s: %d of %d done",
            window.metadata_date,
            window.done_through,
            counts["changed_resumed"],
            len(ids),
        )
    await sync_window.save_window(db, window)
    # Completed, this run vouches for changes after the start of the run that began the window
    # (or, when the changed listing was incomplete, only for what the previous run did).
    await runs.set_changes_from(db, run_id, window.began_at if verdict.trusted else since)
    await db.commit()
    return todo


async def _withdraw_vanished(
    db: aiosqlite.Connection,
    counts: dict[str, int],
    metrics: HarvesterMetrics | None,
    verdict: withdrawal.ListingVerdict,
    run_id: int | None,
) -> None:
    check_id = await withdrawal.record_check(db, verdict, run_id=run_id)
    counts["listing_trusted"] = int(verdict.trusted)
    vanished = await listing.vanished_ids(db)
    if not verdict.trusted:
        log.warning("%s; used only to find new ids", verdict.describe())
        counts["withdraw_skipped"] = len(vanished)
        return
    stored = await count(db, "objects")
    if len(vanished) > 20 and len(vanished) > WITHDRAW_GUARD_FRACTION * stored:
        log.warning(
            "listing lacks %d of %d stored objects; not trusting it to withdraw them",
            len(vanished),
            stored,
        )
        counts["withdraw_skipped"] = len(vanished)
        return
    confirmed, pending = await withdrawal.confirm_absent(db, vanished, check_id=check_id)
    withdrawn = await withdrawal.withdraw(db, confirmed, run_id=run_id)
    counts["withdrawn"] = withdrawn
    counts["withdraw_pending"] = len(pending)
    if metrics is not None:
        metrics.objects_withdrawn.inc(withdrawn)
    if withdrawn or pending:
        log.info(
            "marked %d objects withdrawn (absent from two trustworthy listings); %d absent "
            "once, withdrawn if the next trustworthy listing lacks them too",
            withdrawn,
            len(pending),
        )


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
