"""Fetching one image: allowlist check, manual redirects, streaming to a temp file while hashing,
validation, then the atomic commit into the blob store.

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
import hashlib
import logging
import os
import socket
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from met_harvester.images.blobstore import BlobStore
from met_harvester.images.hosts import AllowedHost, UrlRefused, check_url, classify_ip
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


def _hash_and_write(digest: Any, fd: int, chunk: bytes) -> None:
    """Feed a chunk to the running hash and append it to the temp file."""
    digest.update(chunk)
    view = memoryview(chunk)
    while view:
        view = view[os.write(fd, view) :]


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


class GuardedResolver(AbstractResolver):
    """DNS that refuses non-public answers for non-loopback hosts (DNS rebinding guard).

    An allowed host name must not resolve to a private, loopback or link-local address unless
    the allowlist entry itself is a loopback one. IP literals never reach a resolver.
    """

    def __init__(
        self, allowed: tuple[AllowedHost, ...], inner: AbstractResolver | None = None
    ) -> None:
        self._allowed = allowed
        self._inner = inner if inner is not None else DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """Resolve `host`, dropping non-public addresses unless the host is a loopback entry."""
        results = await self._inner.resolve(host, port, family)
        if any(a.host == host.lower() and a.loopback for a in self._allowed):
            return results
        public = [r for r in results if classify_ip(r["host"]) is None]
        if not public:
            raise OSError(f"image host {host} resolves only to non-public addresses")
        return public

    async def close(self) -> None:
        """Close the inner resolver."""
        await self._inner.close()


def make_session(
    settings: HarvesterSettings, allowed: tuple[AllowedHost, ...]
) -> aiohttp.ClientSession:
    """The one session of the image pool: its own connector, guarded DNS, no auto-redirects."""
    connector = aiohttp.TCPConnector(
        limit=settings.image_concurrency,
        limit_per_host=settings.image_concurrency,
        resolver=GuardedResolver(allowed),
        ttl_dns_cache=300,
    )
    timeout = aiohttp.ClientTimeout(
        total=None, sock_connect=settings.timeout, sock_read=settings.timeout
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        # identity: bodies are stored byte for byte, never a gzip of them (no auto-decompress)
        headers={
            "User-Agent": settings.user_agent,
            "Accept": "image/*",
            "Accept-Encoding": "identity",
        },
        auto_decompress=False,
        trust_env=False,
    )


class ImageFetcher:
    """Fetches image URLs into a blob store through one limiter and one session.

    Args:
        settings: image options (hosts, caps, attempts, timeout).
        store: where blobs go.
        session: from `make_session`.
        limiter: the image pool's adaptive limiter.
        metrics: optional counters.
        executor: threads for validation and the fsync'ing commit (None: asyncio's default);
            give it one thread per concurrent download so fsyncs overlap.

    Back-off between attempts: `settings.retry_wait` doubling up to `settings.retry_wait_max`.
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

    async def fetch(
        self, url: str, *, etag: str | None = None, last_modified: str | None = None
    ) -> FetchOutcome:
        """Fetch one image; never raises for HTTP or content trouble (see `FetchOutcome`)."""
        try:
            target = check_url(url, self.allowed)
        except UrlRefused as exc:
            return FetchOutcome("refused", url, error=exc.reason, permanent=True)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=wait_exponential_jitter(
                multiplier=self.settings.retry_wait,
                jitter=self.settings.retry_wait,
                max=self.settings.retry_wait_max,
            ),
            retry=retry_if_exception_type(TransientFetchError),
            before_sleep=self._count_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._attempt(target, etag, last_modified)
        except UrlRefused as exc:
            return FetchOutcome("refused", url, error=exc.reason, permanent=True)
        except TransientFetchError as exc:
            return FetchOutcome("failed", url, status=exc.status, error=exc.reason)
        except PermanentFetchError as exc:
            return FetchOutcome("failed", url, status=exc.status, error=exc.reason, permanent=True)
        raise AssertionError("unreachable")  # pragma: no cover

    def _count_retry(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        reason = "image_block" if "block" in str(exc) else "image_transient"
        if self.metrics is not None:
            self.metrics.retries.labels(reason).inc()

    def _count(self, status: int | str) -> None:
        if self.metrics is not None:
            self.metrics.requests.labels("image", str(status)).inc()

    async def _attempt(
        self, target: yarl.URL, etag: str | None, last_modified: str | None
    ) -> FetchOutcome:
        headers: dict[str, str] = {}
        if etag:
            headers["If-None-Match"] = etag
        if last_modified:
            headers["If-Modified-Since"] = last_modified
        current = target
        for _hop in range(MAX_REDIRECTS + 1):
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
    ) -> FetchOutcome:
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
        outcome = await self._stream(url, resp, length)
        self.limiter.on_success()
        return outcome

    def _validate_and_commit(self, temp: Path, sha256: str, size: int) -> tuple[ImageInfo, bool]:
        """In a worker thread: validate the complete temp file, then commit it as a blob."""
        info = validate_image(temp, max_pixels=self.settings.max_image_pixels)
        return info, self.store.commit(temp, sha256, size)

    async def _stream(
        self, url: yarl.URL, resp: aiohttp.ClientResponse, length: int | None
    ) -> FetchOutcome:
        limit = self.settings.max_image_bytes
        temp = self.store.new_temp()
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:  # the incoming folder was removed under us: make it again
            temp.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        committed = False
        loop = asyncio.get_running_loop()
        try:
            digest = hashlib.sha256()
            size = 0
            async for chunk in resp.content.iter_chunked(CHUNK_SIZE):
                if size == 0 and looks_like_markup(chunk[:64]):
                    raise PermanentFetchError("not an image: body is HTML/XML/JSON", resp.status)
                size += len(chunk)
                if size > limit:
                    raise PermanentFetchError(
                        f"too large: body exceeds --max-image-bytes {limit}", resp.status
                    )
                if size > OFFLOAD_AFTER:
                    # Large bodies: hash and write in a worker thread (both release the GIL), so
                    # the event loop keeps receiving this and the other downloads meanwhile.
                    await loop.run_in_executor(self.executor, _hash_and_write, digest, fd, chunk)
                else:
                    _hash_and_write(digest, fd, chunk)
            os.close(fd)
            fd = -1
            if length is not None and size != length:
                raise TransientFetchError(
                    f"truncated download: {size} of {length} bytes", resp.status
                )
            if size == 0:
                raise PermanentFetchError("empty body", resp.status)
            sha256 = digest.hexdigest()
            try:
                info, stored = await loop.run_in_executor(
                    self.executor, self._validate_and_commit, temp, sha256, size
                )
            except InvalidImage as exc:
                raise PermanentFetchError(str(exc), resp.status) from None
            committed = True  # commit() has removed the temp name
        finally:
            if fd >= 0:
                os.close(fd)
            if not committed:
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
        return FetchOutcome(
            "stored" if stored else "deduplicated",
            str(url),
            status=resp.status,
            sha256=sha256,
            size=size,
            info=info,
            etag=resp.headers.get("ETag"),
            last_modified=resp.headers.get("Last-Modified"),
        )
