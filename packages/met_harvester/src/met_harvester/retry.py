"""Retry policy as data: what an HTTP answer means, what is retried, how long to wait.

| answer                                   | outcome                           | retried |
|------------------------------------------|-----------------------------------|---------|
| 200 JSON                                 | ok                                | -       |
| 200/403/429 HTML, 403, 429               | block: pause everyone, cut rate   | yes     |
| 5xx, 408, timeout, dropped connection    | server trouble (a run is a block) | yes     |
| 200 truncated or invalid JSON            | bad body                          | yes     |
| 404 JSON `{"message": ...}`              | missing                           | no      |
| 404 HTML page / non-JSON / other JSON    | not the API's answer: transient   | yes     |
| body over the cap, redirect off the host | refused (`RefusedError`)          | no      |
| other 4xx (400 "could not parse", 410)   | permanent failure                 | no      |
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass
from typing import Literal

from tenacity import RetryCallState
from tenacity.wait import wait_random_exponential

StatusClass = Literal["ok", "missing", "permanent", "block", "server"]

BLOCK_STATUSES = frozenset({403, 429})
RETRYABLE_4XX = frozenset({408})


def classify_status(status: int) -> StatusClass:
    """What an HTTP status means for the harvester (the body is checked separately)."""
    if 200 <= status < 300:
        return "ok"
    if status == 404:
        return "missing"
    if status in BLOCK_STATUSES:
        return "block"
    if status >= 500 or status in RETRYABLE_4XX:
        return "server"
    return "permanent"


def looks_like_html(body: str, content_type: str) -> bool:
    """An HTML page (e.g. Imperva's block page) where the API should have sent JSON."""
    if "html" in content_type.lower():
        return True
    return body.lstrip()[:1] == "<"


def block_reason(status: int, body: str, content_type: str) -> str | None:
    """Why an answer is a block answer (the pool stops and probes), or None when it is not.

    A block answer is a 403 or 429, or an HTML page where the API sends JSON: Imperva's
    "Incapsula incident" page comes with 403, and sometimes with 200. An HTML page with a
    4xx/5xx other than those is the server's own error page, judged by its status.
    """
    if status in BLOCK_STATUSES:
        return "block page" if looks_like_html(body, content_type) else "refused"
    if 200 <= status < 300 and looks_like_html(body, content_type):
        return "HTML page instead of JSON"
    return None


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class TransientError(Exception):
    """One attempt failed in a way worth retrying.

    Attributes:
        reason: metric label: blocked, server_error, timeout, connection, truncated, invalid_json.
        status: HTTP status, if an answer came.
        body: the body received, if any.
        retry_after: seconds from a ``Retry-After`` header.
        attempts: attempts made, once the retries are given up.
    """

    def __init__(
        self,
        reason: str,
        detail: str,
        *,
        status: int | None = None,
        body: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(detail)
        self.reason = reason
        self.status = status
        self.body = body
        self.retry_after = retry_after
        self.attempts = 1


class RefusedError(TransientError):
    """An answer the client will not take (a body over the size cap, a redirect away from the
    API host, an encoding it cannot decode). Not retried within the request; the id's fetch
    fails and is retried on a later pass with back-off."""


def is_retryable(exc: BaseException) -> bool:
    """Whether a failed attempt is tried again within the same request."""
    return isinstance(exc, TransientError) and not isinstance(exc, RefusedError)


class BlockedError(TransientError):
    """The firewall or rate limit refused us (403, 429, HTML instead of JSON)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry one request.

    Attributes:
        max_attempts: attempts failing for reasons other than a block, at most.
        block_attempts: attempts answered with a block, at most (each waits out the cool-down).
        wait: first back-off in seconds; doubles per attempt, full jitter.
        wait_max: longest back-off in seconds.
    """

    max_attempts: int = 5
    block_attempts: int = 5
    wait: float = 0.5
    wait_max: float = 30.0

    def backoff(self, failed: int, exc: BaseException) -> float:
        """Seconds to wait after `failed` failed attempts: 0 after a block answer (the
        limiter's probe holds the pool), else full-jitter exponential from `wait`."""
        if isinstance(exc, BlockedError):
            return 0.0
        return random.uniform(0.0, min(self.wait_max, self.wait * 2.0 ** (failed - 1)))

    def wait_seconds(self, state: RetryCallState) -> float:
        """Back-off before the next attempt. Blocks wait 0 here: the limiter's pause holds them."""
        exc = state.outcome.exception() if state.outcome is not None else None
        if isinstance(exc, BlockedError):
            return 0.0
        return float(wait_random_exponential(multiplier=self.wait, max=self.wait_max)(state))


class AttemptBudget:
    """Counts one request's failed attempts by kind; a tenacity ``stop`` callable."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0
        self.blocks = 0

    def note(self, exc: TransientError) -> None:
        """Record one failed attempt."""
        if isinstance(exc, BlockedError):
            self.blocks += 1
        else:
            self.failures += 1

    @property
    def exhausted(self) -> bool:
        """Whether no attempt is left."""
        return (
            self.failures >= self.policy.max_attempts or self.blocks >= self.policy.block_attempts
        )

    @property
    def attempts(self) -> int:
        """Failed attempts so far."""
        return self.failures + self.blocks

    def __call__(self, state: RetryCallState) -> bool:
        return self.exhausted
