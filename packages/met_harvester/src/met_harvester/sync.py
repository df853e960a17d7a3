"""One sync pass: list ids, fetch new and changed records through a bounded pipeline, store them.

Planning works on id sets, never offsets (the API's listing order is not stable):

* first pass (nothing synced yet) or ``--full``: every listed id (``--full`` refetches stored ones);
* incremental: listed ids the mirror lacks, plus ids the API lists as changed since the start of
  the last *completed* full/incremental run minus one day (the API's dates are day-granular), plus
  failed ids whose retry time has come;
* stored ids that left the full listing are marked withdrawn (never deleted).

Fetching is a pipeline with flat memory: a bounded queue of ids, ``settings.concurrency`` workers
calling the client, and one writer task that commits ``settings.batch_size`` outcomes per
transaction (or whatever arrived within `FLUSH_SECONDS`). Every committed batch is final, so a
SIGKILL loses at most the batch in flight, which the next run fetches again because it is still
missing (or, for changed records, still inside the changed window of the last completed run).
Setting `stop_event` stops taking work, lets in-flight requests finish (up to
``settings.grace`` seconds), commits, and marks the run interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import aiosqlite

from met_harvester.client import FetchResult, ListingError, MetClient
from met_harvester.db import store
from met_harvester.db.connection import open_db, utc_now
from met_harvester.images.sync import sync_images
from met_harvester.metrics import HarvesterMetrics
from met_harvester.models import RecordError, parse_object
from met_harvester.priority import order_ids, parse_priority
from met_harvester.progress import ProgressReporter, format_eta
from met_harvester.ratelimit import AdaptiveRateLimiter
from met_harvester.settings import HarvesterSettings

log = logging.getLogger("met_harvester.sync")

FLUSH_SECONDS = 2.0
"""Longest time a fetched outcome waits before it is committed (matters at slow rates)."""
CLEANUP_SECONDS = 5.0
"""How long cancelled pipeline tasks get to end before they are cancelled again."""
MISSING_RECHECK_DAYS = 30
"""A listed id that answered 404 is asked again after this many days (or with --full)."""
OVERLAP = timedelta(days=1)
"""How far before the last completed run's start `metadataDate` reaches back."""
RATE_KEYS = store.RATE_KEYS
LISTING_TOTAL_KEY = store.LISTING_TOTAL_KEY
WITHDRAW_GUARD_FRACTION = 0.5
"""A listing that would withdraw more than this fraction of the mirror is not trusted."""

Outcome = store.FetchedRecord | store.MissingObject | store.FailedFetch | store.QuarantinedRecord


class SyncError(RuntimeError):
    """A fatal problem that ends a pass (its text is the one-line reason shown to the user)."""


@dataclass
class SyncReport:
    """What one pass did. `status` is completed, interrupted or failed."""

    run_id: int | None
    mode: str
    status: str
    started_at: str
    finished_at: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    images: Any = None

    @property
    def completed(self) -> bool:
        """Whether the metadata pass went through to the end."""
        return self.status == "completed"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary."""
        images = self.images
        if hasattr(images, "as_dict"):
            images = images.as_dict()
        return {
            "run_id": self.run_id,
            "mode": self.mode,
            "status": self.status,
            "start": self.started_at,
            "end": self.finished_at,
            "counts": self.counts,
            "error": self.error,
            "images": images if isinstance(images, dict | list | str | int | None) else str(images),
        }


def _unique(ids: Iterable[int]) -> list[int]:
    return list(dict.fromkeys(ids))


def _as_datetime(iso: str) -> datetime:
    return datetime.fromisoformat(iso.replace("Z", "+00:00"))


def _metadata_date(since: str) -> date:
    return (_as_datetime(since) - OVERLAP).date()


def _choose_mode(
    *, full: bool, limit: int | None, object_ids: Sequence[int] | None, departments: Any, since: Any
) -> str:
    if object_ids is not None:
        return "ids"
    if departments:
        return "departments"
    if limit is not None:
        return "limit"
    if full or since is None:
        return "full"
    return "incremental"


def classify(result: FetchResult) -> Outcome:
    """Turn a client result into what the writer stores (validated, quarantined, ...)."""
    object_id = result.object_id
    if result.kind == "missing":
        return store.MissingObject(object_id, result.status or 404, result.error or result.body)
    if result.kind != "ok":
        return store.FailedFetch(object_id, result.status, result.error or "fetch failed")
    data: Any = result.data
    body = result.body
    try:
        if data is None:
            if body is None:
                raise RecordError("empty response")
            data = json.loads(body)
        record = parse_object(data, object_id)
    except (RecordError, ValueError) as exc:
        raw = body if body is not None else json.dumps(data, ensure_ascii=False)
        reason = str(exc) if isinstance(exc, RecordError) else f"body is not JSON: {exc}"
        log.warning("quarantined record: %s", reason, extra={"object_id": object_id})
        return store.QuarantinedRecord(object_id, raw, reason, result.status)
    if body is None:
        body = json.dumps(data, ensure_ascii=False)
    return store.FetchedRecord(record=record, data=data, body=body)


class SyncPass:
    """The state of one running pass; `run_sync` is the way to use it."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        settings: HarvesterSettings,
        *,
        metrics: HarvesterMetrics | None,
        progress: ProgressReporter | None,
        stop_event: asyncio.Event | None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.metrics = metrics
        self.progress = progress
        self.stop_event = stop_event
        self.stopping = False
        self.counts: dict[str, int] = {
            "listed": 0,
            "changed_listed": 0,
            "retries_due": 0,
            "to_fetch": 0,
            "fetched": 0,
            "new": 0,
            "updated": 0,
            "unchanged": 0,
            "missing": 0,
            "failed": 0,
            "quarantined": 0,
            "withdrawn": 0,
        }
        self.run_id: int | None = None
        self.client: MetClient | None = None

    # --- planning -------------------------------------------------------------------------

    async def plan(
        self,
        client: MetClient,
        *,
        full: bool,
        since: str | None,
        object_ids: Sequence[int] | None,
        departments: Sequence[int] | None,
    ) -> list[int]:
        """The ids to fetch, in order; marks vanished ids withdrawn on a full listing."""
        if object_ids is not None:
            return _unique(object_ids)
        db = self.db
        listing = await self._list(client, department_ids=departments)
        self.counts["listed"] = await store.load_listing(db, listing)
        del listing
        if not departments:
            await store.set_state(db, LISTING_TOTAL_KEY, self.counts["listed"])
            await self._withdraw_vanished()
            await self._save_departments(client)
        if full:
            return await self._prioritise(await store.listed_ids(db))
        now = utc_now()
        recheck = store.iso_after(now, -MISSING_RECHECK_DAYS * 86400.0)
        first: list[int] = []
        if since is not None:
            changed = await self._list(
                client, metadata_date=_metadata_date(since), department_ids=departments
            )
            self.counts["changed_listed"] = len(changed)
            first.extend(sorted(set(changed)))
        due = await store.due_failure_ids(db, now=now)
        self.counts["retries_due"] = len(due)
        first.extend(due)
        unfetched = await store.unfetched_listed_ids(db, now=now, missing_recheck_before=recheck)
        return _unique(first + await self._prioritise(unfetched))

    async def _list(self, client: MetClient, **kwargs: Any) -> list[int]:
        try:
            return list(await client.list_object_ids(**kwargs))
        except ListingError as exc:
            raise SyncError(str(exc)) from exc

    async def _withdraw_vanished(self) -> None:
        vanished = await store.vanished_ids(self.db)
        if not vanished:
            return
        async with self.db.execute(
            "SELECT COUNT(*) FROM objects WHERE withdrawn_at IS NULL"
        ) as cursor:
            row = await cursor.fetchone()
        stored = int(row[0]) if row else 0
        if len(vanished) > 20 and len(vanished) > WITHDRAW_GUARD_FRACTION * stored:
            log.warning(
                "listing lacks %d of %d stored objects; not trusting it to withdraw them",
                len(vanished),
                stored,
            )
            self.counts["withdraw_skipped"] = len(vanished)
            return
        withdrawn = await store.mark_withdrawn(self.db, vanished)
        await self.db.commit()
        self.counts["withdrawn"] = withdrawn
        if self.metrics is not None:
            self.metrics.objects_withdrawn.inc(withdrawn)
        log.info("marked %d objects withdrawn (no longer listed)", withdrawn)

    async def _save_departments(self, client: MetClient) -> None:
        try:
            departments = await client.get_departments()
        except Exception as exc:  # departments are a nicety; the pass goes on
            log.warning("could not fetch /departments: %s", exc)
            return
        await store.save_departments(self.db, departments)
        await self.db.commit()

    async def _prioritise(self, ids: list[int]) -> list[int]:
        if not ids:
            return ids
        ordered: list[int] = await order_ids(self.db, ids, self.settings.priority)
        return _unique([*ordered, *ids])

    # --- fetching -------------------------------------------------------------------------

    async def fetch_all(self, client: MetClient, todo: Sequence[int]) -> int:
        """Fetch `todo` through the pipeline; returns how many outcomes were committed."""
        settings = self.settings
        workers_n = max(1, min(settings.concurrency, len(todo)))
        ids_q: asyncio.Queue[int | None] = asyncio.Queue(maxsize=2 * workers_n)
        out_q: asyncio.Queue[Outcome | None] = asyncio.Queue(maxsize=2 * settings.batch_size)
        self._remaining = len(todo)
        if self.progress is not None:
            self.progress.start("records", len(todo))

        async def produce() -> None:
            for object_id in todo:
                await ids_q.put(object_id)
            for _ in range(workers_n):
                await ids_q.put(None)

        async def work() -> None:
            while not self.stopping:
                object_id = await ids_q.get()
                if object_id is None:
                    return
                result = await client.get_object(object_id)
                await out_q.put(classify(result))

        producer = asyncio.create_task(produce(), name="sync-producer")
        workers = [asyncio.create_task(work(), name=f"sync-worker-{i}") for i in range(workers_n)]
        writer = asyncio.create_task(self._write(out_q), name="sync-writer")
        watcher = (
            asyncio.create_task(self._watch_stop(producer, ids_q, workers, workers_n))
            if self.stop_event is not None
            else None
        )
        workers_done = asyncio.gather(*workers, return_exceptions=True)
        first_to_end: set[asyncio.Future[Any]] = {writer, workers_done}
        try:
            done, _ = await asyncio.wait(first_to_end, return_when=asyncio.FIRST_COMPLETED)
            if writer in done:  # the writer only ends early by failing
                writer.result()
            for outcome in await workers_done:
                if isinstance(outcome, BaseException) and not isinstance(
                    outcome, asyncio.CancelledError
                ):
                    raise outcome
            await out_q.put(None)
            return await writer
        finally:
            for task in (producer, writer, watcher, *workers):
                if task is not None and not task.done():
                    task.cancel()
            tasks = [t for t in (producer, writer, watcher, *workers) if t is not None]
            # Bounded: a task that lost its cancellation (possible inside third-party code)
            # must not hang the pass; it is cancelled again and left behind.
            for _ in range(3):
                _, pending = await asyncio.wait(tasks, timeout=CLEANUP_SECONDS)
                if not pending:
                    break
                for task in pending:
                    task.cancel()
            else:
                log.warning("%d sync tasks did not stop when cancelled", len(pending))

    async def _watch_stop(
        self,
        producer: asyncio.Task[None],
        ids_q: asyncio.Queue[int | None],
        workers: list[asyncio.Task[None]],
        workers_n: int,
    ) -> None:
        assert self.stop_event is not None
        await self.stop_event.wait()
        self.stopping = True
        log.info("stopping: finishing requests in flight, then committing")
        producer.cancel()
        while not ids_q.empty():
            ids_q.get_nowait()
        for _ in range(workers_n):
            ids_q.put_nowait(None)
        _, pending = await asyncio.wait(workers, timeout=self.settings.grace)
        for task in pending:
            task.cancel()

    async def _write(self, out_q: asyncio.Queue[Outcome | None]) -> int:
        batch: list[Outcome] = []
        written = 0
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                # asyncio.timeout, not wait_for: wait_for can lose a cancellation in 3.11
                async with asyncio.timeout(timeout):
                    item = await out_q.get()
            except TimeoutError:  # the oldest outcome waited FLUSH_SECONDS: commit what we have
                written += await self.commit_batch(batch)
                batch, deadline = [], None
                continue
            if item is None:  # every worker is done
                if batch:
                    written += await self.commit_batch(batch)
                return written
            batch.append(item)
            if deadline is None:
                deadline = loop.time() + FLUSH_SECONDS
            if len(batch) >= self.settings.batch_size:
                written += await self.commit_batch(batch)
                batch, deadline = [], None

    async def commit_batch(self, batch: Sequence[Outcome]) -> int:
        """Store one batch of outcomes in one transaction, with the run's counts and the rate."""
        db = self.db
        now = utc_now()
        records = [o for o in batch if isinstance(o, store.FetchedRecord)]
        missing = [o for o in batch if isinstance(o, store.MissingObject)]
        failed = [o for o in batch if isinstance(o, store.FailedFetch)]
        bad = [o for o in batch if isinstance(o, store.QuarantinedRecord)]
        saved = await store.save_objects(db, records, now=now)
        await store.save_missing(db, missing, now=now)
        await store.save_failures(db, failed, now=now)
        await store.save_quarantine(db, bad, now=now)
        c = dict(self.counts)
        c["fetched"] += len(batch)
        c["new"] += saved.new
        c["updated"] += saved.updated
        c["unchanged"] += saved.unchanged
        c["missing"] += len(missing)
        c["failed"] += len(failed)
        c["quarantined"] += len(bad)
        if self.run_id is not None:
            await store.update_run_counts(db, self.run_id, c)
        await self.save_rate()
        await db.commit()
        self.counts = c
        self._remaining -= len(batch)
        self._count_metrics(saved, records, failed, bad)
        self._report_progress(len(batch))
        for failure in failed:
            log.warning(
                "fetch failed (status %s): %s",
                failure.status,
                failure.error,
                extra={"object_id": failure.object_id},
            )
        return len(batch)

    def _count_metrics(
        self,
        saved: store.SaveCounts,
        records: Sequence[store.FetchedRecord],
        failed: Sequence[store.FailedFetch],
        bad: Sequence[store.QuarantinedRecord],
    ) -> None:
        m = self.metrics
        if m is None:
            return
        m.objects_fetched.inc(len(records))
        m.objects_new.inc(saved.new)
        m.objects_updated.inc(saved.updated)
        m.quarantined.inc(len(bad))
        for failure in failed:
            m.failures.labels(kind="fetch" if failure.status is None else str(failure.status)).inc()
        m.queue_depth.labels(pool="api").set(max(0, self._remaining))

    def _report_progress(self, n: int) -> None:
        if self.progress is None:
            return
        self.progress.advance("records", n)
        if self.client is not None:
            rate = self.client.limiter.current_rate
            eta = self.client.eta_seconds(max(0, self._remaining))
            self.progress.note("records", f"{rate:.3g} req/s, eta {format_eta(eta)}")

    async def save_rate(self) -> None:
        """Persist the limiter's learned (and current) rate so the next run starts there."""
        limiter = getattr(self.client, "limiter", None)
        if limiter is None:
            return
        learned = getattr(limiter, "learned_rate", None)
        if learned is not None:
            await store.set_state(self.db, RATE_KEYS["learned"], f"{float(learned):.6g}")
        current = getattr(limiter, "current_rate", None)
        if current is not None:
            await store.set_state(self.db, RATE_KEYS["current"], f"{float(current):.6g}")
        await store.set_state(self.db, RATE_KEYS["ceiling"], f"{self.settings.rate:.6g}")


async def _run_images(
    db: aiosqlite.Connection,
    settings: HarvesterSettings,
    *,
    metrics: HarvesterMetrics | None,
    progress: ProgressReporter | None,
    object_ids: Sequence[int] | None,
    stop_event: asyncio.Event | None,
) -> Any:
    return await sync_images(
        db,
        settings,
        metrics=metrics,
        progress=progress,
        object_ids=object_ids,
        stop_event=stop_event,
    )


async def run_sync(
    settings: HarvesterSettings,
    *,
    full: bool = False,
    limit: int | None = None,
    object_ids: Sequence[int] | None = None,
    departments: Sequence[int] | None = None,
    metrics: HarvesterMetrics | None = None,
    progress: ProgressReporter | None = None,
    stop_event: asyncio.Event | None = None,
    limiter: AdaptiveRateLimiter | None = None,
) -> SyncReport:
    """Run one sync pass (metadata, then images unless `settings.images` is off).

    Args:
        settings: every option; `settings.data_dir` holds the database.
        full: refetch every listed record.
        limit: stop after this many records (the run then does not count as a completed pass).
        object_ids: fetch just these ids (no listing).
        departments: restrict the listing to these department ids.
        metrics: counters to update.
        progress: where to report progress (None: silent).
        stop_event: set it to stop cleanly (SIGINT/SIGTERM); the run ends `interrupted`.
        limiter: an API rate limiter to use instead of one built from the settings and the
            learned rate (tests use one with a scaled-down policy).

    Returns:
        The report; `status` is completed or interrupted (failed records do not fail a pass).

    Raises:
        SyncError: a fatal problem (database not writable, listing unavailable after retries).
    """
    if limit is not None and limit < 0:
        raise SyncError("--limit must be >= 0")
    try:
        db = await open_db(settings.data_dir)
    except (sqlite3.Error, OSError) as exc:
        raise SyncError(f"cannot open the database {settings.db_path}: {exc}") from exc
    try:
        return await _run(
            db,
            settings,
            full=full,
            limit=limit,
            object_ids=object_ids,
            departments=departments,
            metrics=metrics,
            progress=progress,
            stop_event=stop_event,
            limiter=limiter,
        )
    except (sqlite3.Error, OSError) as exc:
        raise SyncError(f"database error in {settings.db_path}: {exc}") from exc
    finally:
        await db.close()


async def _run(
    db: aiosqlite.Connection,
    settings: HarvesterSettings,
    *,
    full: bool,
    limit: int | None,
    object_ids: Sequence[int] | None,
    departments: Sequence[int] | None,
    metrics: HarvesterMetrics | None,
    progress: ProgressReporter | None,
    stop_event: asyncio.Event | None,
    limiter: AdaptiveRateLimiter | None,
) -> SyncReport:
    try:
        parse_priority(settings.priority)
    except ValueError as exc:
        raise SyncError(str(exc)) from exc
    stale = await store.mark_stale_runs_interrupted(db)
    if stale:
        log.info("marked %d run(s) left running by an ended process as interrupted", stale)
    since = await store.changes_since(db)
    mode = _choose_mode(
        full=full, limit=limit, object_ids=object_ids, departments=departments, since=since
    )
    started_at = utc_now()
    sync = SyncPass(db, settings, metrics=metrics, progress=progress, stop_event=stop_event)
    run_id = await store.start_run(db, mode, now=started_at)
    sync.run_id = run_id
    report = SyncReport(run_id=run_id, mode=mode, status="running", started_at=started_at)
    initial_rate = await store.get_state_float(db, RATE_KEYS["learned"])
    if initial_rate is not None:
        initial_rate = min(initial_rate, settings.rate)
    try:
        async with MetClient(
            settings, metrics=metrics, initial_rate=initial_rate, limiter=limiter
        ) as client:
            sync.client = client
            todo = await sync.plan(
                client,
                full=full or since is None,
                since=since,
                object_ids=object_ids,
                departments=departments,
            )
            if limit is not None:
                todo = todo[:limit]
            sync.counts["to_fetch"] = len(todo)
            log.info(
                "sync %s: %d listed, %d changed since %s, %d retries due, %d to fetch",
                mode,
                sync.counts["listed"],
                sync.counts["changed_listed"],
                since or "-",
                sync.counts["retries_due"],
                len(todo),
            )
            done = await sync.fetch_all(client, todo) if todo else 0
            await sync.save_rate()
            await db.commit()
    except SyncError as exc:
        await db.rollback()
        await store.finish_run(db, run_id, "failed", sync.counts, error=str(exc))
        raise
    except (asyncio.CancelledError, Exception) as exc:
        with contextlib.suppress(Exception):
            # A batch cut short must not be committed along with the run's end.
            await db.rollback()
            status = "interrupted" if isinstance(exc, asyncio.CancelledError) else "failed"
            await store.finish_run(db, run_id, status, sync.counts, error=repr(exc)[:500])
        raise
    finally:
        if progress is not None:
            progress.finish("records")
    interrupted = sync.stopping and done < len(todo)
    report.status = "interrupted" if interrupted else "completed"
    report.counts = sync.counts
    report.finished_at = utc_now()
    await store.finish_run(
        db,
        run_id,
        report.status,
        sync.counts,
        error="stopped by signal" if interrupted else None,
        now=report.finished_at,
    )
    log.info(
        "sync %s %s: %s",
        mode,
        report.status,
        ", ".join(f"{k} {v}" for k, v in sync.counts.items()),
    )
    stopped = stop_event is not None and stop_event.is_set()
    if report.status == "completed" and settings.images and not stopped:
        report.images = await _run_images(
            db,
            settings,
            metrics=metrics,
            progress=progress,
            object_ids=object_ids,
            stop_event=stop_event,
        )
    return report
