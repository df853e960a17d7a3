"""Fetching one image: allowlist check, manual redirects, streaming to a temp file while hashing,
validation, then the atomic commit into the blob store (in a group, see `images.commit`).

Retry policy as data: 403/429 and HTML pages where an image was expected are firewall blocks
(the limiter pauses and cuts its rate), 5xx, timeouts, dropped connections and short bodies are
transient; all of these are retried through tenacity (bounded, exponential, jittered). 404 and
other 4xx, bodies over the byte cap and bytes that are not a whole, sane image are permanent for
this run (recorded as failures with the reason; a later run retries them after a back-off). A URL
or redirect outside the allowlist is refused without any request.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import yarl
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from met_harvester.images.blobstore import BlobStore, PendingBlob
from met_harvester.images.commit import GroupCommitter
from met_harvester.images.hosts import AllowedHost, UrlRefused, check_url
from met_harvester.images.validate import ImageInfo, InvalidImage, looks_like_markup, validate_image
from met_harvester.retry import parse_retry_after

if TYPE_CHECKING:
    from met_harvester.metrics import HarvesterMetrics
    from met_harvester.ratelimit import AdaptiveRateLimiter
    from met_harvester.settings import HarvesterSettings

log = logging.getLogger("met_harvester.images.download")

MAX_REDIRECTS = 5
CHUNK_SIZE = 1 << 18
OFFLOAD_AFTER = 1 << 20  # bytes of a body handled on the event loop before moving to a thread
HASH_BATCH = 1 << 19  # bytes per hand-off to a worker thread after that
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
OutcomeKind = Literal["stored", "deduplicated", "not_modified", "failed", "refused"]


@dataclass(frozen=True)
class FetchOutcome:
    """The result of fetching one image URL; `error` says why for failed and refused."""

    kind: OutcomeKind
    url: str
    status: int | None = None
    sha256: str | None = None
    size: int | None = None
    info: ImageInfo | None = None
    etag: str | None = None
    last_modified: str | None = None
    error: str | None = None
    permanent: bool = False


class TransientFetchError(Exception):
    """Worth retrying: a block, a 5xx, a timeout, a dropped or short body."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class PermanentFetchError(Exception):
    """Not worth retrying in this run: 4xx, too large, not a whole sane image."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class DeadlineExceeded(PermanentFetchError):
    """The download did not complete within `--image-timeout`: not retried in this pass (a
    later pass tries again after the back-off), so a trickling server holds a slot only once."""


@dataclass(frozen=True)
class _Body:
    """A body received and validated, waiting in its temp file for the commit."""

    url: str
    blob: PendingBlob
    info: ImageInfo
    etag: str | None
    last_modified: str | None


def discard(temp: Path, fd: int) -> None:
    """Close and remove a temp file that will not become a blob."""
    with contextlib.suppress(OSError):
        os.close(fd)
    with contextlib.suppress(FileNotFoundError):
        temp.unlink()


def _hash_and_write(digest: Any, fd: int, chunks: list[bytes]) -> None:
    """Feed chunks to the running hash and append them to the temp file."""
    for chunk in chunks:
        digest.update(chunk)
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd, view) :]


async def receive_body(
    resp: aiohttp.ClientResponse,
    store: BlobStore,
    *,
    max_bytes: int,
    max_pixels: int,
    executor: Executor | None,
) -> tuple[PendingBlob, ImageInfo]:
    """Stream a 200 response's body into a new temp file of `store`, hashing it as it arrives,
    then check it is complete and a sane image. Returns the temp file, still open, for
    `BlobStore.commit_group` (or `discard`), and what Pillow found.

    The first `OFFLOAD_AFTER` bytes are hashed and written on the event loop (a small image
    never leaves it); after that, chunks are gathered into batches of `HASH_BATCH` bytes that a
    worker thread hashes and writes (hashlib and write release the GIL) while the loop receives
    the next batch: memory stays at two batches per download, whatever the image size.

    Raises:
        PermanentFetchError: markup, over `max_bytes`, empty or not a whole, sane image.
        TransientFetchError: fewer bytes than the Content-Length (truncated).
    """
    length = resp.content_length
    temp = store.new_temp()
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL
    try:
        fd = os.open(temp, flags, 0o444)  # read-only once closed, as the blob will be
    except FileNotFoundError:  # the incoming folder was removed under us: make it again
        temp.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, flags, 0o444)
    loop = asyncio.get_running_loop()
    hashing: asyncio.Future[None] | None = None  # the batch a worker thread is on
    try:
        digest = hashlib.sha256()
        size = 0
        batch: list[bytes] = []
        batched = 0
        async for chunk in resp.content.iter_chunked(CHUNK_SIZE):
            if size == 0 and looks_like_markup(chunk[:64]):
                raise PermanentFetchError("not an image: body is HTML/XML/JSON", resp.status)
            size += len(chunk)
            if size > max_bytes:
                raise PermanentFetchError(
                    f"too large: body exceeds --max-image-bytes {max_bytes}", resp.status
                )
            if size <= OFFLOAD_AFTER:
                _hash_and_write(digest, fd, [chunk])
                continue
            batch.append(chunk)
            batched += len(chunk)
            if batched >= HASH_BATCH:
                if hashing is not None:
                    await hashing
                hashing = loop.run_in_executor(executor, _hash_and_write, digest, fd, batch)
                batch, batched = [], 0
        if hashing is not None:
            await hashing
            hashing = None
        _hash_and_write(digest, fd, batch)
        if length is not None and size != length:
            raise TransientFetchError(f"truncated download: {size} of {length} bytes", resp.status)
        if size == 0:
            raise PermanentFetchError("empty body", resp.status)
        blob = PendingBlob(temp, fd, digest.hexdigest(), size)
        try:
            if size <= OFFLOAD_AFTER:
                info = validate_image(fd, max_pixels=max_pixels)
            else:
                info = await loop.run_in_executor(
                    executor, functools.partial(validate_image, fd, max_pixels=max_pixels)
                )
        except InvalidImage as exc:
            raise PermanentFetchError(str(exc), resp.status) from None
    except BaseException:
        if hashing is not None:  # never close the fd under a thread still writing to it
            with contextlib.suppress(BaseException):
                await asyncio.shield(hashing)
        discard(temp, fd)
        raise
    return blob, info


class ImageFetcher:
    """Fetches image URLs into a blob store through one limiter and one session.

    At most `settings.image_concurrency` fetches download at once (the pool's slots); a fetch
    leaves its slot once the body is on disk and validated, and then waits for the group commit
    of its blob, so callers may run more fetches than slots to keep downloading meanwhile.

    Args:
        settings: image options (hosts, caps, attempts, timeout, concurrency).
        store: where blobs go.
        session: from `images.session.make_session`.
        limiter: the image pool's adaptive limiter.
        metrics: optional counters.
        executor: threads for hashing large bodies and for the group commits (None: asyncio's
            default).

    Back-off between attempts: `settings.retry_wait` doubling up to `settings.retry_wait_max`.
    Call `aclose` when done, so that no blob is left waiting for its group.
    """

    def __init__(
        self,
        settings: HarvesterSettings,
        store: BlobStore,
        *,
        session: aiohttp.ClientSession,
        limiter: AdaptiveRateLimiter,
        allowed: tuple[AllowedHost, ...],
        metrics: HarvesterMetrics | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.settings = settings
        self.executor = executor
        self.store = store
        self.session = session
        self.limiter = limiter
        self.allowed = allowed
        self.metrics = metrics
        self.committer = GroupCommitter(
            store, executor=executor, max_group=settings.image_concurrency
        )
        self._slots = asyncio.Semaphore(settings.image_concurrency)
        self._retrying = AsyncRetrying(  # copied per fetch: the policy is built once
            stop=stop_after_attempt(settings.max_attempts),
            wait=wait_exponential_jitter(
                multiplier=settings.retry_wait,
                jitter=settings.retry_wait,
                max=settings.retry_wait_max,
            ),
            retry=retry_if_exception_type(TransientFetchError),
            before_sleep=self._count_retry,
            reraise=True,
        )

    async def aclose(self) -> None:
        """Commit the blobs still waiting for their group."""
        await self.committer.aclose()

    async def fetch(
        self,
        url: str,
        *,
        etag: str | None = None,
        last_modified: str | None = None,
        stop_event: asyncio.Event | None = None,
    ) -> FetchOutcome | None:
        """Fetch one image; never raises for HTTP or content trouble (see `FetchOutcome`).

        Returns None, having sent nothing, if `stop_event` is set by the time a slot is free.

        Raises:
            OSError, ValueError: a local failure to store the blob (disk full, ...).
        """
        try:
            target = check_url(url, self.allowed)
        except UrlRefused as exc:
            return FetchOutcome("refused", url, error=exc.reason, permanent=True)
        got: FetchOutcome | _Body | None = None
        try:
            async for attempt in self._retrying.copy():
                with attempt:
                    async with self._slots:
                        first = attempt.retry_state.attempt_number == 1
                        if first and stop_event is not None and stop_event.is_set():
                            return None  # not started yet: leave it for the next run
                        got = await self._attempt_within_deadline(target, etag, last_modified)
        except UrlRefused as exc:
            return FetchOutcome("refused", url, error=exc.reason, permanent=True)
        except TransientFetchError as exc:
            return FetchOutcome("failed", url, status=exc.status, error=exc.reason)
        except DeadlineExceeded as exc:  # the server may be fine tomorrow: a transient back-off
            return FetchOutcome("failed", url, status=exc.status, error=exc.reason)
        except PermanentFetchError as exc:
            return FetchOutcome("failed", url, status=exc.status, error=exc.reason, permanent=True)
        except BaseException:  # cancelled after the body was received: drop its temp file
            if isinstance(got, _Body):
                discard(got.blob.temp, got.blob.fd)
            raise
        if not isinstance(got, _Body):
            return got
        stored = await self.committer.commit(got.blob)  # the committer owns the temp file now
        return FetchOutcome(
            "stored" if stored else "deduplicated",
            got.url,
            status=200,
            sha256=got.blob.sha256,
            size=got.blob.size,
            info=got.info,
            etag=got.etag,
            last_modified=got.last_modified,
        )

    def _count_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = "image_block" if "block" in str(exc) else "image_transient"
        if self.metrics is not None:
            self.metrics.retries.labels(reason).inc()

    def _count(self, status: int | str) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels("image", str(status)).inc()

    async def _attempt_within_deadline(
        self, target: yarl.URL, etag: str | None, last_modified: str | None
    ) -> FetchOutcome | _Body:
        """One attempt under the total deadline `settings.image_timeout` (a server trickling
        bytes slower than the read timeout notices still ends here); not retried in this pass."""
        deadline = self.settings.image_timeout
        await self.limiter.acquire()  # waiting for the pool's turn is not the download's time
        try:
            async with asyncio.timeout(deadline):
                return await self._attempt(target, etag, last_modified)
        except TimeoutError:
            if self.metrics is not None:
                self.metrics.requests.labels("image", "deadline").inc()
            self.limiter.on_server_error()
            raise DeadlineExceeded(
                f"download not complete within --image-timeout {deadline:g}s"
            ) from None

    async def _attempt(
        self, target: yarl.URL, etag: str | None, last_modified: str | None
    ) -> FetchOutcome | _Body:
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        current = target
        for hop in range(MAX_REDIRECTS + 1):
            if hop:  # the first hop's slot was taken before the deadline started
                await self.limiter.acquire()
            try:
                async with self.session.get(
                    current, allow_redirects=False, headers=headers
                ) as resp:
                    self._count(resp.status)
                    if resp.status in REDIRECT_STATUSES:
                        current = self._follow(current, resp)
                        self.limiter.on_success()
                        continue
                    return await self._handle(current, resp, conditional=bool(headers))
            except aiohttp.ClientError as exc:  # dropped, short or malformed responses
                self._count("error")
                self.limiter.on_server_error()
                raise TransientFetchError(
                    f"connection error: {exc or type(exc).__name__}"
                ) from None
            except TimeoutError:
                self._count("timeout")
                self.limiter.on_server_error()
                raise TransientFetchError("timed out") from None
        raise PermanentFetchError(f"more than {MAX_REDIRECTS} redirects")

    def _follow(self, current: yarl.URL, resp: aiohttp.ClientResponse) -> yarl.URL:
        location = resp.headers.get("Location")
        if not location:
            raise PermanentFetchError("redirect without Location", resp.status)
        try:
            nxt = current.join(yarl.URL(location))
        except ValueError as exc:
            raise UrlRefused(location, f"bad redirect Location ({exc})") from None
        try:
            return check_url(nxt, self.allowed)
        except UrlRefused as exc:
            raise UrlRefused(str(nxt), f"redirect to a disallowed URL: {exc.reason}") from None

    async def _handle(
        self, url: yarl.URL, resp: aiohttp.ClientResponse, *, conditional: bool
    ) -> FetchOutcome | _Body:
        status = resp.status
        if status == 304 and conditional:
            self.limiter.on_success()
            return FetchOutcome(
                "not_modified",
                str(url),
                status=304,
                etag=resp.headers.get("ETag"),
                last_modified=resp.headers.get("Last-Modified"),
            )
        if status in (403, 429):
            self.limiter.on_block(parse_retry_after(resp.headers.get("Retry-After")))
            raise TransientFetchError(f"HTTP {status} (firewall block or rate limit)", status)
        if status >= 500:
            self.limiter.on_server_error()
            raise TransientFetchError(f"HTTP {status}", status)
        if status != 200:
            self.limiter.on_success()
            raise PermanentFetchError(f"HTTP {status}", status)
        ctype = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if ctype in ("text/html", "application/xhtml+xml"):
            self.limiter.on_block(None)
            raise TransientFetchError(
                f"HTML page instead of an image (Content-Type {ctype}; firewall block?)", status
            )
        limit = self.settings.max_image_bytes
        length = resp.content_length
        if length is not None and length > limit:
            raise PermanentFetchError(
                f"too large: Content-Length {length} exceeds --max-image-bytes {limit}", status
            )
        blob, info = await receive_body(
            resp,
            self.store,
            max_bytes=limit,
            max_pixels=self.settings.max_image_pixels,
            executor=self.executor,
        )
        self.limiter.on_success()
        return _Body(
            str(url),
            blob,
            info,
            etag=resp.headers.get("ETag"),
            last_modified=resp.headers.get("Last-Modified"),
        )
