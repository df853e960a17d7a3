"""The image pool: its own limiter, session and download slots, fed while records are fetched.

Work comes from three places, in this order: a plan made before the pool started (the full
planner of `sync_images`), image row ids the record pass `offer`s as it commits batches (a
bounded queue: when it is full the ids are dropped, since their rows are `pending` in the
database and the backlog finds them), and the backlog: current rows that are `pending`, or
`failed` with their retry due, read from `images` alone. The pool ends once `close` was called
and every source is empty, or when `stop_event` is set.

One writer records outcomes in batches, each with the pool limiter's state in the same
transaction. It is supervised: if it fails, the pass stops at once with one line
(`ImagePassError`) and nothing more is downloaded that could not be recorded. Queues are
bounded, so memory stays flat however long the pass.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiosqlite

from met_harvester.db import limiter_state
from met_harvester.db.connection import utc_now
from met_harvester.images.blobstore import BlobStore
from met_harvester.images.download import FetchOutcome, ImageFetcher
from met_harvester.images.hosts import AllowedHost
from met_harvester.images.record import (
    ImageSyncReport,
    ImageWork,
    Results,
    write_results,
)
from met_harvester.images.session import make_session
from met_harvester.metrics import HarvesterMetrics
from met_harvester.pools import make_limiter
from met_harvester.progress import ProgressReporter, format_eta
from met_harvester.ratelimit import Abandoned, AdaptiveRateLimiter
from met_harvester.settings import HarvesterSettings

log = logging.getLogger("met_harvester.images.sync")

_FATAL_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT})
WORKERS_PER_SLOT = 4  # workers per download slot: the others wait for their group commit
LOAD_BATCH = 256
OFFER_BATCHES = 64
"""Batches of offered ids the pool holds at most (beyond that the backlog finds them)."""
PENDING_COUNT_SECONDS = 10.0
_ROW_SQL = (
    "SELECT image_id, object_id, role, position, variant, url, sha256, status, etag, "
    "last_modified, attempts FROM images WHERE image_id IN ({marks})"
)
_BACKLOG_SQL = (
    "SELECT image_id FROM images WHERE is_current = 1 AND image_id > ? AND (status = 'pending' "
    "OR (status = 'failed' AND (next_retry_at IS NULL OR next_retry_at <= ?))) "
    "ORDER BY image_id LIMIT ?"
)
_PENDING_SQL = "SELECT COUNT(*) FROM images WHERE is_current = 1 AND status = 'pending'"


class ImagePassError(RuntimeError):
    """The image pass had to stop (its text is the one-line reason)."""


class ImagePool:
    """Downloads image rows into the blob store through the image pool's own limiter.

    Args:
        db: the pool's own connection (the record pass writes through another one).
        settings: image options (rate, concurrency, hosts, caps).
        store: the blob store.
        allowed: the parsed image host allowlist.
        report: counts of the pass, updated per committed batch.
        metrics: optional counters.
        progress: optional reporter (task "images").
        stop_event: when set, no new downloads start; those in flight finish and are recorded.
        backlog: also take `pending` and due `failed` rows from the database.
        write_lock: taken around each batch's transaction when another connection (the
            record pass) writes at the same time.
    """

    def __init__(
        self,
        db: aiosqlite.Connection,
        settings: HarvesterSettings,
        store: BlobStore,
        allowed: tuple[AllowedHost, ...],
        report: ImageSyncReport,
        *,
        metrics: HarvesterMetrics | None = None,
        progress: ProgressReporter | None = None,
        stop_event: asyncio.Event | None = None,
        backlog: bool = True,
        write_lock: asyncio.Lock | None = None,
    ) -> None:
        self.db = db
        self.settings = settings
        self.store = store
        self.allowed = allowed
        self.report = report
        self.metrics = metrics
        self.progress = progress
        self.stop_event = stop_event
        self.backlog = backlog
        self.write_lock = write_lock or asyncio.Lock()
        self.limiter: AdaptiveRateLimiter | None = None
        self.first_request_at: float | None = None  # time.monotonic() of the first download
        self._offers: asyncio.Queue[tuple[list[int], frozenset[int], bool]] = asyncio.Queue(
            maxsize=OFFER_BATCHES
        )
        self._wake = asyncio.Event()
        self._closed = False
        self._dropped = False
        self._queued: set[int] = set()  # handed to the workers, not yet recorded
        self._pending = 0
        self._pending_counted = -float("inf")

    # ------------------------------------------------------------------ feeding
    def offer(self, image_ids: Sequence[int], conditional: Collection[int] = ()) -> None:
        """Image rows the record pass just committed (never blocks; see the module doc)."""
        if not image_ids:
            return
        try:
            self._offers.put_nowait((list(image_ids), frozenset(conditional), False))
        except asyncio.QueueFull:
            self._dropped = True  # their rows are pending: the backlog takes them
        self._wake.set()

    async def offer_wait(self, image_ids: Sequence[int], conditional: Collection[int]) -> None:
        """Rows a full plan chose (fetched even when `ok`: a missing blob, a revalidation);
        waits for room in the queue."""
        await self._offers.put((list(image_ids), frozenset(conditional), True))
        self._wake.set()

    def close(self) -> None:
        """Nothing more will be offered: end once the queued work is done."""
        self._closed = True
        self._wake.set()

    def _stopping(self) -> bool:
        return self.stop_event is not None and self.stop_event.is_set()

    # ------------------------------------------------------------------ the pass
    async def run(self, planned: Sequence[int] = (), conditional: Collection[int] = ()) -> None:
        """Fetch `planned`, then what is offered and the backlog, until closed and done."""
        state = await limiter_state.load(self.db, "images")
        self.limiter = make_limiter(self.settings, "images", state, metrics=self.metrics)
        work: asyncio.Queue[ImageWork | None] = asyncio.Queue(
            maxsize=self.settings.image_concurrency * 4
        )
        results: Results = asyncio.Queue(maxsize=self.settings.image_concurrency * 8)
        executor = ThreadPoolExecutor(
            max_workers=self.settings.image_concurrency, thread_name_prefix="met-image-commit"
        )
        if self.progress is not None:
            self.progress.start("images", None)
        try:
            async with make_session(self.settings, self.allowed) as session:
                fetcher = ImageFetcher(
                    self.settings,
                    self.store,
                    session=session,
                    limiter=self.limiter,
                    allowed=self.allowed,
                    metrics=self.metrics,
                    executor=executor,
                )
                try:
                    await self._supervise(fetcher, work, results, planned, conditional)
                finally:
                    await fetcher.aclose()
        finally:
            executor.shutdown(wait=True)
            if self.progress is not None:
                self.progress.finish("images")

    async def _supervise(
        self,
        fetcher: ImageFetcher,
        work: asyncio.Queue[ImageWork | None],
        results: Results,
        planned: Sequence[int],
        conditional: Collection[int],
    ) -> None:
        writer = asyncio.create_task(
            write_results(
                self.db, results, self.report, self.metrics, self._on_batch, self.write_lock
            )
        )
        n_workers = WORKERS_PER_SLOT * self.settings.image_concurrency
        workers = [
            asyncio.create_task(self._work(fetcher, work, results)) for _ in range(n_workers)
        ]
        feeder = asyncio.create_task(self._feed(work, planned, conditional))
        tasks = [writer, feeder, *workers]
        if self.stop_event is not None:
            tasks.append(asyncio.create_task(self._abandon_on_stop(self.stop_event)))
        try:
            await _until_done(feeder, [writer, *workers])
            for _ in workers:
                await work.put(None)
            await _until_done(asyncio.gather(*workers), [writer])
            await results.put(None)
            await _until_done(writer, [])
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if self.metrics is not None:
            self.metrics.queue_depth.labels("images").set(0)

    async def _abandon_on_stop(self, stop_event: asyncio.Event) -> None:
        """On a stop, downloads still waiting for their turn give up at once (nothing sent);
        those under way finish and are recorded."""
        await stop_event.wait()
        if self.limiter is not None:
            self.limiter.abandon_waiting()

    async def _feed(
        self,
        work: asyncio.Queue[ImageWork | None],
        planned: Sequence[int],
        conditional: Collection[int],
    ) -> None:
        for start in range(0, len(planned), LOAD_BATCH):
            await self._put(work, list(planned[start : start + LOAD_BATCH]), conditional, True)
        cursor = 0
        backlog_left = self.backlog
        while not self._stopping():
            if not self._offers.empty():
                ids, cond, planned_ids = self._offers.get_nowait()
                await self._put(work, ids, cond, planned_ids)
                continue
            if self._dropped and self.backlog:
                self._dropped, cursor, backlog_left = False, 0, True
            if backlog_left:
                ids = await self._backlog_ids(cursor)
                if ids:
                    cursor = ids[-1]
                    await self._put(work, ids, (), False)
                    continue
                backlog_left = False
            if self._closed:
                return
            self._wake.clear()
            if self._offers.empty() and not self._dropped:
                await self._wake.wait()

    async def _backlog_ids(self, after: int) -> list[int]:
        async with self.db.execute(_BACKLOG_SQL, (after, utc_now(), LOAD_BATCH)) as cur:
            return [int(r[0]) for r in await cur.fetchall()]

    async def _put(
        self,
        work: asyncio.Queue[ImageWork | None],
        ids: list[int],
        conditional: Collection[int],
        planned: bool,
    ) -> None:
        """Load rows `ids` and queue those still to fetch (an offered or backlog row that is
        already `ok`, or queued, is skipped)."""
        ids = [i for i in ids if i not in self._queued]
        if not ids:
            return
        marks = ",".join("?" * len(ids))
        async with self.db.execute(_ROW_SQL.format(marks=marks), ids) as cur:
            rows = {r[0]: r for r in await cur.fetchall()}
        for image_id in ids:
            r = rows.get(image_id)
            if self._stopping():
                return
            if r is None or (r[7] == "ok" and not planned and image_id not in conditional):
                continue
            self._queued.add(image_id)
            await work.put(ImageWork(*r, conditional=image_id in conditional))  # type: ignore[misc]

    async def _work(
        self,
        fetcher: ImageFetcher,
        work: asyncio.Queue[ImageWork | None],
        results: Results,
    ) -> None:
        while (item := await work.get()) is not None:
            if self._stopping():
                continue  # drain the queue without starting new downloads
            if self.first_request_at is None:
                self.first_request_at = time.monotonic()
            outcome = await _fetch_one(fetcher, item, self.stop_event)
            assert self.limiter is not None
            self.limiter.request_done()
            if outcome is not None:
                await results.put((item, outcome))

    async def _on_batch(
        self, db: aiosqlite.Connection, batch: list[tuple[ImageWork, FetchOutcome]]
    ) -> None:
        """Inside each recorded batch's transaction: the limiter state, progress."""
        assert self.limiter is not None
        await limiter_state.save(db, self.limiter)
        for item, _ in batch:
            self._queued.discard(item.image_id)
        if self.progress is None:
            return
        self.progress.advance("images", len(batch))
        now = time.monotonic()
        if now - self._pending_counted >= PENDING_COUNT_SECONDS:
            async with db.execute(_PENDING_SQL) as cur:
                row = await cur.fetchone()
            self._pending, self._pending_counted = int(row[0]) if row else 0, now
        rate = self.limiter.current_rate
        eta = format_eta(self.limiter.eta_seconds(self._pending))
        self.progress.note("images", f"{rate:.3g} req/s, ~{self._pending:,} pending, eta {eta}")


async def _fetch_one(
    fetcher: ImageFetcher, item: ImageWork, stop_event: asyncio.Event | None
) -> FetchOutcome | None:
    try:
        return await fetcher.fetch(
            item.url,
            etag=item.etag if item.conditional else None,
            last_modified=item.last_modified if item.conditional else None,
            stop_event=stop_event,
        )
    except Abandoned:
        return None  # the pass stopped before its turn: the row stays as it was
    except OSError as exc:
        if exc.errno in _FATAL_ERRNOS:
            raise  # disk full or read-only: no point going on
        log.exception("image fetch failed", extra={"object_id": item.object_id})
        return FetchOutcome("failed", item.url, error=f"local error: {exc}")
    except Exception as exc:  # a bug must not end the whole pass
        log.exception("image fetch failed", extra={"object_id": item.object_id})
        return FetchOutcome("failed", item.url, error=f"internal error: {exc!r}")


async def _until_done(main: asyncio.Future[Any], watched: list[asyncio.Task[Any]]) -> None:
    """Wait for `main`; if a watched task (the writer, a worker) ends first, stop the pass:
    they end only when told to, so an early end is a failure."""
    waiting: set[asyncio.Future[Any]] = {main, *watched}
    while not main.done():
        done, waiting = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is main:
                continue
            exc = None if task.cancelled() else task.exception()
            if isinstance(exc, OSError) and exc.errno in _FATAL_ERRNOS:
                raise exc
            what = "recording image outcomes" if task is watched[0] else "an image download"
            reason = "cancelled" if exc is None else f"{type(exc).__name__}: {exc}"
            raise ImagePassError(f"image pass stopped: {what} failed: {reason}") from exc
    main.result()
