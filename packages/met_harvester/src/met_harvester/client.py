"""The Met collection API client: one aiohttp session, rate-limited, retried, never surprised.

Every request waits for a place among the requests in flight (``settings.concurrency``, or
automatic: 2, more as the rate grows), then for a start slot of the adaptive rate limiter (each
redirect hop too), and its answer is judged by `met_harvester.api_judge` (which answers stop
the pool for a probe: see `met_harvester.ratelimit`). ``get_object`` never raises for HTTP
trouble; the listing raises `ListingError` with a one-line reason. What the client gives back
is defined in `met_harvester.api_results` (re-exported here).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
import yarl

from met_harvester.api_answer import ACCEPT_ENCODING, MAX_REDIRECTS, read_capped, redirect_target
from met_harvester.api_judge import judge
from met_harvester.api_results import (
    MAX_OBJECT_ID,
    Answer,
    ApiError,
    FetchKind,
    FetchResult,
    Listing,
    ListingError,
    api_message,
    listed_ids,
    one_line,
)
from met_harvester.inflight import InFlightGate, auto_concurrency
from met_harvester.pools import make_limiter
from met_harvester.ratelimit import AdaptiveRateLimiter, LimiterState
from met_harvester.retry import (
    AttemptBudget,
    RefusedError,
    RetryPolicy,
    TransientError,
    is_retryable,
    parse_retry_after,
)

if TYPE_CHECKING:
    from met_harvester.metrics import HarvesterMetrics
    from met_harvester.settings import HarvesterSettings

__all__ = [
    "MAX_OBJECT_ID",
    "ApiError",
    "FetchKind",
    "FetchResult",
    "Listing",
    "ListingError",
    "MetClient",
]

log = logging.getLogger("met_harvester.client")

_PLAIN_PATH = re.compile(r"(?:/[A-Za-z0-9_-]+)+")
"""A path with nothing to quote or normalise (``/objects/123``): appended to the parsed base."""


class MetClient:
    """Async client of the Met collection API (use as ``async with MetClient(settings) as c``).

    Args:
        settings: api_url, rate, concurrency, timeout, user_agent, max_attempts,
            block_cooldown, retry_wait and retry_wait_max are used.
        metrics: counts requests by endpoint and status, and retries by reason.
        state: what the API pool's limiter learned in earlier runs.
        limiter: a limiter to use instead of one built from the settings and `state`.
    """

    def __init__(
        self,
        settings: HarvesterSettings,
        *,
        metrics: HarvesterMetrics | None = None,
        state: LimiterState | None = None,
        limiter: AdaptiveRateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = settings.api_url.rstrip("/")
        base = yarl.URL(self.base_url)
        self._plain_base = base.is_absolute() and not (base.raw_query_string or base.raw_fragment)
        self._base_parts = (base.scheme, base.raw_authority, base.raw_path.rstrip("/"))
        self.metrics = metrics
        self._request_counters: dict[tuple[str, str], Any] = {}
        self.limiter = limiter or make_limiter(settings, "api", state, metrics=metrics)
        self.retry_policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            block_attempts=settings.max_attempts,
            wait=settings.retry_wait,
            wait_max=settings.retry_wait_max,
        )
        self._in_flight = InFlightGate(self._concurrency())
        self.sending: set[asyncio.Task[Any]] = set()
        """Tasks whose request has started and is not answered yet (a stop lets these finish
        and cancels those still waiting for their turn)."""
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------------ lifecycle
    async def __aenter__(self) -> MetClient:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def open(self) -> None:
        """Create the one HTTP session (done by ``async with``)."""
        if self._session is not None:
            return
        most = self.settings.max_concurrency
        connector = aiohttp.TCPConnector(limit=most, limit_per_host=most)
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
            headers={
                "User-Agent": self.settings.user_agent,
                "Accept": "application/json",
                "Accept-Encoding": ACCEPT_ENCODING,
            },
            auto_decompress=False,  # `read_capped` decodes in bounded steps (no gzip bombs)
        )

    async def close(self) -> None:
        """Close the session and its connections."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    def eta_seconds(self, remaining: int) -> float:
        """Seconds to fetch `remaining` records at the learned (else current) rate."""
        return self.limiter.eta_seconds(remaining)

    # ------------------------------------------------------------------ endpoints
    async def get_object(self, object_id: int) -> FetchResult:
        """Fetch one record; never raises for HTTP trouble (see `FetchResult.kind`)."""
        try:
            answer = await self._request(f"/objects/{object_id}", None, "object", object_id)
        except TransientError as exc:
            return FetchResult(
                object_id, "failed", exc.status, exc.body, None, one_line(str(exc)), exc.attempts
            )
        if answer.status == 404:
            return FetchResult(
                object_id, "missing", 404, answer.body, None, api_message(answer), answer.attempts
            )
        if answer.status >= 300:
            error = f"HTTP {answer.status}: {api_message(answer)}"
            log.error(
                "object %d failed permanently: %s", object_id, error, extra={"object_id": object_id}
            )
            return FetchResult(
                object_id, "failed", answer.status, answer.body, None, error, answer.attempts
            )
        if answer.data is not None and not isinstance(answer.data, dict):
            error = f"expected a JSON object, got {type(answer.data).__name__}"
            return FetchResult(
                object_id, "failed", answer.status, answer.body, None, error, answer.attempts
            )
        return FetchResult(
            object_id, "ok", answer.status, answer.body, answer.data, None, answer.attempts
        )

    async def list_object_ids(
        self,
        *,
        metadata_date: dt.date | None = None,
        department_ids: Sequence[int] | None = None,
    ) -> list[int]:
        """All object ids (or those changed after `metadata_date`, in `department_ids`).

        Raises:
            ListingError: the listing could not be had after retries, or made no sense.
        """
        return (
            await self.list_objects(metadata_date=metadata_date, department_ids=department_ids)
        ).ids

    async def list_objects(
        self,
        *,
        metadata_date: dt.date | None = None,
        department_ids: Sequence[int] | None = None,
    ) -> Listing:
        """Like `list_object_ids`, with the listing's own `total` (to judge its completeness).

        Raises:
            ListingError: the listing could not be had after retries, or made no sense.
        """
        params: dict[str, str] = {}
        if metadata_date is not None:
            day = metadata_date.date() if isinstance(metadata_date, dt.datetime) else metadata_date
            params["metadataDate"] = day.isoformat()
        if department_ids:
            params["departmentIds"] = "|".join(str(int(d)) for d in department_ids)
        try:
            data = await self.get_json("/objects", params, endpoint="listing")
        except ApiError as exc:
            raise ListingError(
                f"cannot list object ids from {self.base_url}/objects: {exc}",
                status=exc.status,
                body=exc.body,
            ) from exc
        where = f"{self.base_url}/objects"
        total = data.get("total") if isinstance(data, dict) else None
        if isinstance(total, bool) or not isinstance(total, int):
            total = None
        return Listing(listed_ids(data, where), total)

    async def search(self, query: str, **params: str | int | bool) -> list[int]:
        """Ids matching ``/search?q=query&...`` (``objectIDs: null`` gives ``[]``)."""
        args = {"q": query} | {
            k: (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in params.items()
        }
        data = await self.get_json("/search", args, endpoint="search")
        return listed_ids(data, f"{self.base_url}/search")

    async def get_departments(self) -> list[dict[str, Any]]:
        """The ``/departments`` list: ``[{"departmentId": 1, "displayName": ...}, ...]``."""
        data = await self.get_json("/departments", None, endpoint="departments")
        departments = data.get("departments") if isinstance(data, dict) else None
        if not isinstance(departments, list):
            raise ApiError(f"unexpected /departments body: {one_line(json.dumps(data))}")
        return [d for d in departments if isinstance(d, dict)]

    async def get_json(
        self, path: str, params: Mapping[str, str] | None = None, *, endpoint: str = "other"
    ) -> Any:
        """GET ``<api-url><path>`` and return its JSON.

        Raises:
            ApiError: a 4xx answer, or retries exhausted; the message is one line.
        """
        try:
            answer = await self._request(path, params, endpoint, None)
        except TransientError as exc:
            raise ApiError(str(exc), status=exc.status, body=exc.body) from exc
        if answer.status >= 300:
            raise ApiError(
                f"HTTP {answer.status}: {api_message(answer)}",
                status=answer.status,
                body=answer.body,
            )
        return answer.data

    # ------------------------------------------------------------------ machinery
    async def _request(
        self, path: str, params: Mapping[str, str] | None, endpoint: str, object_id: int | None
    ) -> Answer:
        """One request with retries. Returns the final answer (2xx, 404 or permanent 4xx);
        raises the last `TransientError` when the retries are used up."""
        budget = AttemptBudget(self.retry_policy)
        while True:  # a plain loop: this is the hot path of every record
            try:
                answer = await self._attempt(path, params, endpoint)
            except TransientError as exc:
                budget.note(exc)
                if budget.exhausted or not is_retryable(exc):
                    self._give_up(exc, budget, path, endpoint, object_id)
                    raise
                self._count_retry(exc)
                await asyncio.sleep(self.retry_policy.backoff(budget.attempts, exc))
                continue
            answer.attempts = budget.attempts + 1
            return answer

    @staticmethod
    def _give_up(
        exc: TransientError,
        budget: AttemptBudget,
        path: str,
        endpoint: str,
        object_id: int | None,
    ) -> None:
        what = f"object {object_id}" if object_id is not None else f"GET {path}"
        message = f"{exc.reason}: {exc} (gave up after {budget.attempts} attempts)"
        exc.args = (message,)
        exc.attempts = budget.attempts
        log.error(
            "giving up on %s: %s",
            what,
            message,
            extra={"object_id": object_id, "endpoint": endpoint},
        )

    def _concurrency(self) -> int:
        if self.settings.concurrency is not None:
            return self.settings.concurrency
        return auto_concurrency(self.limiter.current_rate)

    async def _attempt(self, path: str, params: Mapping[str, str] | None, endpoint: str) -> Answer:
        if self._session is None:
            raise RuntimeError("MetClient is not open: use `async with MetClient(settings)`")
        url = self.base_url + path
        target = self.url_for(path)
        self._in_flight.size = self._concurrency()
        async with self._in_flight:
            started = await self.limiter.acquire()
            task = asyncio.current_task()
            if task is not None:
                self.sending.add(task)
            try:
                status, raw, headers = await self._get(target, params)
                content_type = headers.get("Content-Type", "")
                retry_after = parse_retry_after(headers.get("Retry-After"))
            except RefusedError:
                self._count_request(endpoint, "refused")
                raise
            except TimeoutError as exc:
                self._transport_trouble(endpoint, "timeout", started)
                raise TransientError(
                    "timeout", f"no answer within {self.settings.timeout:g}s from {url}"
                ) from exc
            except aiohttp.ClientPayloadError as exc:
                self._transport_trouble(endpoint, "truncated", started)
                raise TransientError("truncated", f"truncated body from {url}: {exc}") from exc
            except aiohttp.ClientError as exc:
                self._transport_trouble(endpoint, "connection", started)
                raise TransientError(
                    "connection", f"connection error on {url}: {type(exc).__name__}: {exc}"
                ) from exc
            finally:
                self.sending.discard(task)  # type: ignore[arg-type]
        self._count_request(endpoint, str(status))
        return judge(self.limiter, url, status, raw, content_type, retry_after, started)

    def url_for(self, path: str) -> yarl.URL:
        """``<api-url><path>`` as a URL; the same as ``yarl.URL(base_url + path)``.

        A plain path (``/objects/123``) is appended to the base parsed once, with no second
        parse per request; any other path goes through yarl's parser."""
        if self._plain_base and _PLAIN_PATH.fullmatch(path):
            scheme, authority, base_path = self._base_parts
            return yarl.URL.build(
                scheme=scheme, authority=authority, path=base_path + path, encoded=True
            )
        return yarl.URL(self.base_url + path)

    async def _get(
        self, url: yarl.URL, params: Mapping[str, str] | None
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """GET with the body size cap, following redirects only on the API host."""
        assert self._session is not None
        target = url
        for hop in range(MAX_REDIRECTS + 1):
            if hop:  # each redirect is a request too: it takes its own start slot
                await self.limiter.acquire()
            async with self._session.get(target, params=params, allow_redirects=False) as response:
                if response.status in (301, 302, 303, 307, 308):
                    target = redirect_target(response.url, response.headers.get("Location"))
                    params = None  # the Location carries the query
                    continue
                raw = await read_capped(response, self.settings.max_body_bytes)
                return response.status, raw, response.headers
        raise RefusedError("redirect", f"more than {MAX_REDIRECTS} redirects from {url}")

    def _transport_trouble(self, endpoint: str, label: str, started: float) -> None:
        self.limiter.on_server_error(started_at=started)
        self._count_request(endpoint, label)

    def _count_request(self, endpoint: str, status: str) -> None:
        if self.metrics is None:
            return
        counter = self._request_counters.get((endpoint, status))
        if counter is None:  # each labelled child is looked up once, not per request
            counter = self.metrics.requests.labels(endpoint=endpoint, status=status)
            self._request_counters[endpoint, status] = counter
        counter.inc()

    def _count_retry(self, exc: TransientError) -> None:
        reason = exc.reason
        if self.metrics is not None:
            self.metrics.retries.labels(reason=reason).inc()
        log.debug("retrying after %s: %s", reason, exc)
