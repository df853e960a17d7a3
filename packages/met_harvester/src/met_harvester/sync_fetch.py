"""Fetching the planned ids of a sync pass through a bounded pipeline, and storing the outcomes.

The pipeline has flat memory: a bounded queue of ids, ``settings.concurrency`` workers calling the
client, and one writer task that commits ``settings.batch_size`` outcomes per transaction (or
whatever arrived within `FLUSH_SECONDS`, or `BATCH_BYTES` of bodies); bodies fetched but not yet
committed are held to `QUEUED_BYTES` (a worker waits for room). Every committed batch is final, so a SIGKILL loses at
most the batch in flight, which the next run fetches again because it is still missing (or, for
changed records, still inside the changed window of the last completed run). Setting
`stop_event` stops taking work, lets in-flight requests finish (up to ``settings.grace``
seconds), commits, and leaves the rest for the next run.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiosqlite

from met_harvester.client import FetchResult, MetClient
from met_harvester.db import limiter_state, records, runs, state, trouble
from met_harvester.db.connection import utc_now
from met_harvester.metrics import HarvesterMetrics
from met_harvester.models import RecordError, parse_object
from met_harvester.progress import ProgressReporter, format_eta
from met_harvester.settings import HarvesterSettings
from met_harvester.sync_window import WindowCursor

if TYPE_CHECKING:
    from met_harvester.images.concurrent import ImagesBeside

log = logging.getLogger("met_harvester.sync")

FLUSH_SECONDS = 2.0
"""Longest time a fetched outcome waits before it is committed (matters at slow rates)."""
BATCH_BYTES = 32 * 1024 * 1024
"""A batch is committed early once its bodies reach this size (memory stays flat with big ones)."""
QUEUED_BYTES = 64 * 1024 * 1024
"""Bodies fetched but not yet committed, at most (a worker waits; one body may exceed it alone)."""
CLEANUP_SECONDS = 5.0
"""How long cancelled pipeline tasks get to end before they are cancelled again."""

Outcome = (
    records.FetchedRecord | trouble.MissingObject | trouble.FailedFetch | trouble.QuarantinedRecord
)


def classify(result: FetchResult) -> Outcome:
    """Turn a client result into what the writer stores (validated, quarantined, ...)."""
    object_id = result.object_id
    if result.kind == "missing":
        return trouble.MissingObject(object_id, result.status or 404, result.error or result.body)
    if result.kind != "ok":
        return trouble.FailedFetch(object_id, result.status, result.error or "fetch failed")
    data: Any = result.data
    body = result.body
    try:
        if data is None:
            if body is None:
                raise RecordError("empty response")
            data = json.loads(body)
        record = parse_object(data, object_id)
    except (RecordError, ValueError, RecursionError) as exc:
        raw = body if body is not None else repr(data)[:100_000]
        reason = _quarantine_reason(exc)
        log.warning("quarantined record: %s", reason, extra={"object_id": object_id})
        return trouble.QuarantinedRecord(object_id, raw, reason, result.status)
    if body is None:
        body = json.dumps(data, ensure_ascii=False)
    return records.FetchedRecord(record=record, data=data, body=body)


class ByteBudget:
    """At most `limit` bytes taken at once; a taker waits for room (alone, it may exceed it)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiting = 0
        self._room = asyncio.Condition()

    async def take(self, size: int) -> None:
        """Wait until `size` fits (or nothing is taken), then take it."""
        if self.used + size <= self.limit and not self._waiting:  # room, nobody queued first
            self.used += size
            return
        self._waiting += 1
        try:
            async with self._room:
                await self._room.wait_for(lambda: self.used == 0 or self.used + size <= self.limit)
                self.used += size
        finally:
            self._waiting -= 1

    async def give(self, size: int) -> None:
        """Return `size` bytes and wake the waiters."""
        async with self._room:
            self.used = max(0, self.used - size)
            self._room.notify_all()


def _body_size(outcome: Outcome) -> int:
    if isinstance(outcome, records.FetchedRecord):
        return len(outcome.body)
    return len(outcome.raw_body) if isinstance(outcome, trouble.QuarantinedRecord) else 0


def _quarantine_reason(exc: Exception) -> str:
    if isinstance(exc, RecordError):
        return str(exc)
    if isinstance(exc, RecursionError):
        return "body is not JSON we can read: nested too deeply"
    return f"body is not JSON: {exc}"


class FetchPipeline:
    """Fetches ids with one client and commits the outcomes in batches, counting into `counts`.

    Args:
        db: the one writer connection.
        settings: concurrency, batch size, grace, rate ceiling.
        client: an open `MetClient`.
        counts: the run's counts (fetched, new, updated, ...), updated per committed batch.
        run_id: the `sync_runs` row whose counts are kept current.
        metrics: counters to update.
        progress: where to report progress (task "records").
        stop_event: set it to stop taking work; `stopping` then becomes True.
        images: the image pool running beside: each batch's images are planned in its
            transaction and offered to the pool once it is committed.
        window_ids: the changed window's ids (ascending, at the head of the work); how far
            they are committed is stored with each batch (`sync_window`).
    """

    def __init__(
        self,
        db: aiosqlite.Connection,
        settings: HarvesterSettings,
        client: MetClient,
        *,
        counts: dict[str, int],
        run_id: int,
        metrics: HarvesterMetrics | None = None,
        progress: ProgressReporter | None = None,
        stop_event: asyncio.Event | None = None,
        images: ImagesBeside | None = None,
        window_ids: Sequence[int] = (),
    ) -> None:
        self.db = db
        self.images = images
        self.write_lock = images.write_lock if images is not None else asyncio.Lock()
        self.window = WindowCursor(window_ids) if window_ids else None
        self.settings = settings
        self.client = client
        self.counts = counts
        self.run_id = run_id
        self.metrics = metrics
        self.progress = progress
        self.stop_event = stop_event
        self.stopping = False
        self._remaining = 0
        self._queued = ByteBudget(QUEUED_BYTES)

    async def fetch_all(self, todo: Sequence[int]) -> int:
        """Fetch `todo` through the pipeline; returns how many outcomes were committed."""
        settings = self.settings
        workers_n = max(1, min(settings.max_concurrency, len(todo)))
        ids = iter(todo)  # shared by the workers: each id is taken by one, when it has room
        out_q: asyncio.Queue[Outcome | None] = asyncio.Queue(maxsize=2 * settings.batch_size)
        self._remaining = len(todo)
        if self.progress is not None:
            self.progress.start("records", len(todo))

        async def work() -> None:  # no producer task: taking the next id wakes nothing
            while not self.stopping:
                object_id = next(ids, None)
                if object_id is None:
                    return
                outcome = classify(await self.client.get_object(object_id))
                await self._queued.take(_body_size(outcome))
                await out_q.put(outcome)

        workers = [asyncio.create_task(work(), name=f"sync-worker-{i}") for i in range(workers_n)]
        writer = asyncio.create_task(self._write(out_q), name="sync-writer")
        watcher = (
            asyncio.create_task(self._watch_stop(workers)) if self.stop_event is not None else None
        )
        workers_done = asyncio.gather(*workers, return_exceptions=True)
        first_to_end: set[asyncio.Future[Any]] = {writer, workers_done}
        tasks = [t for t in (writer, watcher, *workers) if t is not None]
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
            await _cancel_all(tasks)

    async def _watch_stop(self, workers: list[asyncio.Task[None]]) -> None:
        assert self.stop_event is not None
        await self.stop_event.wait()
        self.stopping = True  # a worker takes no new id once it sees this
        log.info("stopping: finishing requests in flight, then committing")
        for task in workers:  # waiting for a start slot (or a retry): nothing sent to finish
            if task not in self.client.sending:
                task.cancel()
        _, pending = await asyncio.wait(workers, timeout=self.settings.grace)
        for task in pending:
            task.cancel()

    async def _write(self, out_q: asyncio.Queue[Outcome | None]) -> int:
        batch: list[Outcome] = []
        batch_bytes = 0
        written = 0
        deadline: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                if out_q.empty():
                    # asyncio.timeout, not wait_for: wait_for can lose a cancellation in 3.11
                    async with asyncio.timeout(timeout):
                        item = await out_q.get()
                elif timeout == 0.0:  # the oldest outcome waited FLUSH_SECONDS (none is lost)
                    raise TimeoutError
                else:  # ready: no timer to arm and cancel for each outcome
                    item = out_q.get_nowait()
            except TimeoutError:  # the oldest outcome waited FLUSH_SECONDS: commit what we have
                written += await self._commit_and_release(batch, batch_bytes)
                batch, deadline, batch_bytes = [], None, 0
                continue
            if item is None:  # every worker is done
                if batch:
                    written += await self._commit_and_release(batch, batch_bytes)
                return written
            batch.append(item)
            batch_bytes += _body_size(item)
            if deadline is None:
                deadline = loop.time() + FLUSH_SECONDS
            if len(batch) >= self.settings.batch_size or batch_bytes >= BATCH_BYTES:
                written += await self._commit_and_release(batch, batch_bytes)
                batch, deadline, batch_bytes = [], None, 0

    async def _commit_and_release(self, batch: Sequence[Outcome], size: int) -> int:
        written = await self.commit_batch(batch)
        await self._queued.give(size)
        return written

    async def commit_batch(self, batch: Sequence[Outcome]) -> int:
        """Store one batch of outcomes in one transaction, with the run's counts and the rate.
        The image pool writes through its own connection: the two take turns (`write_lock`),
        so neither's transaction reads a snapshot the other then commits over."""
        async with self.write_lock:
            return await self._commit_batch(batch)

    async def _commit_batch(self, batch: Sequence[Outcome]) -> int:
        db = self.db
        now = utc_now()
        fetched = [o for o in batch if isinstance(o, records.FetchedRecord)]
        missing = [o for o in batch if isinstance(o, trouble.MissingObject)]
        failed = [o for o in batch if isinstance(o, trouble.FailedFetch)]
        bad = [o for o in batch if isinstance(o, trouble.QuarantinedRecord)]
        saved, unstorable = await records.save_objects_or_quarantine(db, fetched, now=now)
        bad += unstorable
        await trouble.save_missing(db, missing, now=now)
        await trouble.save_failures(db, failed, now=now)
        await trouble.save_quarantine(db, bad, now=now)
        images = await self.images.plan(db, fetched) if self.images is not None else None
        c = dict(self.counts)
        c["fetched"] += len(batch)
        c["new"] += saved.new
        c["updated"] += saved.updated
        c["unchanged"] += saved.unchanged
        c["missing"] += len(missing)
        c["failed"] += len(failed)
        c["quarantined"] += len(bad)
        await runs.update_run_counts(db, self.run_id, c)
        if self.window is not None:
            await self.window.save(db, [o.object_id for o in batch])
        await save_rate(db, self.client, self.settings)
        await db.commit()
        if images is not None and self.images is not None:
            self.images.offer(images)
        self.counts.update(c)  # only once committed: the caller's dict stays true to the DB
        self._remaining -= len(batch)
        self._count_metrics(saved, fetched, failed, bad)
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
        saved: records.SaveCounts,
        fetched: Sequence[records.FetchedRecord],
        failed: Sequence[trouble.FailedFetch],
        bad: Sequence[trouble.QuarantinedRecord],
    ) -> None:
        m = self.metrics
        if m is None:
            return
        m.objects_fetched.inc(len(fetched))
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
        limiter = self.client.limiter
        eta = format_eta(self.client.eta_seconds(max(0, self._remaining)))
        paused = ", paused by a block" if limiter.paused else ""
        self.progress.note("records", f"{limiter.current_rate:.3g} req/s, eta {eta}{paused}")


async def save_rate(
    db: aiosqlite.Connection, client: MetClient, settings: HarvesterSettings
) -> None:
    """Persist what the API limiter learned (`limiter.api`) and its learned and current rate
    and the ceiling in `harvester_state` (no commit), so the next run starts where this was."""
    limiter = client.limiter
    await limiter_state.save(db, limiter)
    if limiter.learned_rate is not None:
        await state.set_state(db, state.RATE_KEYS["learned"], f"{limiter.learned_rate:.6g}")
    await state.set_state(db, state.RATE_KEYS["current"], f"{limiter.current_rate:.6g}")
    await state.set_state(db, state.RATE_KEYS["ceiling"], f"{settings.rate:.6g}")


async def _cancel_all(tasks: Sequence[asyncio.Task[Any]]) -> None:
    """Cancel what is still running and wait for it, boundedly: a task that lost its
    cancellation (possible inside third-party code) must not hang the pass; it is cancelled
    again and left behind."""
    for task in tasks:
        if not task.done():
            task.cancel()
    for _ in range(3):
        _, pending = await asyncio.wait(tasks, timeout=CLEANUP_SECONDS)
        if not pending:
            return
        for task in pending:
            task.cancel()
    log.warning("%d sync tasks did not stop when cancelled", len(pending))
