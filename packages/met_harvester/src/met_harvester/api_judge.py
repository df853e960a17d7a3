"""What one API answer means, and what the pool's limiter hears of it (`judge`).

A block page (403, 429, HTML where JSON is expected: `retry.block_reason`) stops the pool for
a probe; a 5xx is a server error (a block when it carries `Retry-After`); a 404 is the API's
"missing" only when its body is the API's JSON (`api_answer.is_api_not_found`), else it is
retried like a server error; a 2xx body that is not JSON is retried; a final 4xx without JSON
is still final. Everything else is an answer, parsed once (`api_answer.decode_json`).
"""

from __future__ import annotations

from met_harvester.api_answer import decode_json, is_api_not_found
from met_harvester.api_results import Answer, one_line
from met_harvester.ratelimit import AdaptiveRateLimiter
from met_harvester.retry import BlockedError, TransientError, block_reason, classify_status


def judge(
    limiter: AdaptiveRateLimiter,
    url: str,
    status: int,
    raw: bytes,
    content_type: str,
    retry_after: float | None,
    started: float,
) -> Answer:
    """The answer to a request to `url` that `limiter` started at `started`, told to the limiter.

    Raises:
        BlockedError: a block page.
        TransientError: a server error, a body that is not the API's JSON: worth retrying.
    """
    try:
        body = raw.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        body, utf8 = raw.decode("utf-8", errors="replace"), False
    kind = classify_status(status)
    blocked = block_reason(status, body, content_type)
    if blocked is not None:
        limiter.on_block(retry_after, started_at=started, reason=blocked)
        raise BlockedError(
            "blocked",
            f"HTTP {status} {blocked} from {url}",
            status=status,
            body=body,
            retry_after=retry_after,
        )
    if kind == "server":
        if retry_after is not None:  # the server says when: that is a block
            limiter.on_block(retry_after, started_at=started, reason=f"HTTP {status}")
        else:
            limiter.on_server_error(started_at=started)
        raise TransientError(
            "server_error",
            f"HTTP {status} from {url}: {one_line(body, 80)}",
            status=status,
            body=body,
            retry_after=retry_after,
        )
    try:
        if not utf8:
            raise ValueError("body is not UTF-8")
        data = decode_json(raw, body)
    except RecursionError:
        if kind != "ok":
            raise _not_the_api(limiter, url, status, body, started) from None
        limiter.on_success(started_at=started)  # a hostile record: the pipeline quarantines it
        return Answer(status, body, None, 1)
    except ValueError as exc:
        if kind == "missing":
            raise _not_the_api(limiter, url, status, body, started) from exc
        if kind != "ok":  # a 400/410 without a JSON body is still a final answer
            limiter.on_success(started_at=started)
            return Answer(status, body, None, 1)
        limiter.on_server_error(started_at=started)
        raise TransientError(
            "invalid_json",
            f"invalid JSON from {url} ({len(raw)} bytes): {exc}",
            status=status,
            body=body,
        ) from exc
    if kind == "missing" and not is_api_not_found(status, data):
        raise _not_the_api(limiter, url, status, body, started)
    limiter.on_success(started_at=started)
    return Answer(status, body, data, 1)


def _not_the_api(
    limiter: AdaptiveRateLimiter, url: str, status: int, body: str, started: float
) -> TransientError:
    """A 404 that is not the API's JSON `{"message": ...}` (an IIS HTML page, an empty or
    other body): it says nothing about the id, so it is retried like a server error."""
    limiter.on_server_error(started_at=started)
    return TransientError(
        "not_found_page",
        f"HTTP {status} from {url} is not the API's answer: {one_line(body, 80) or '(empty)'}",
        status=status,
        body=body,
    )
