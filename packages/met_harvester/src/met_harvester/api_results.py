"""What the API client gives back: a record's `FetchResult`, an id `Listing`, the errors, and
`Answer` (one judged HTTP answer), with the helpers that turn bodies into one-line reasons."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger("met_harvester.client")

FetchKind = Literal["ok", "missing", "failed"]
MAX_OBJECT_ID = 2**63 - 1
"""Largest id SQLite can store; larger (or non-positive) listed ids are left out."""


@dataclass
class FetchResult:
    """The outcome of fetching one object record.

    Attributes:
        object_id: the id asked for.
        kind: ok; missing (404, e.g. "ObjectID not found" / "Not a valid object", not retried);
            failed (permanent 4xx, or retries exhausted).
        status: last HTTP status, ``None`` if no answer came.
        body: raw body text as received (for raw_json / quarantine).
        data: parsed JSON object when kind is ok.
        error: one-line reason when not ok.
        attempts: attempts made.
    """

    object_id: int
    kind: FetchKind
    status: int | None
    body: str | None
    data: dict[str, Any] | None
    error: str | None
    attempts: int = 1


@dataclass(frozen=True)
class Listing:
    """An id listing: the distinct ids in the API's order, and its `total` (None if absent)."""

    ids: list[int]
    total: int | None


class ApiError(Exception):
    """An API request failed permanently or after all retries; the message is one line."""

    def __init__(self, message: str, *, status: int | None = None, body: str | None = None):
        super().__init__(message)
        self.status = status
        self.body = body


class ListingError(ApiError):
    """The id listing could not be had (after retries)."""


@dataclass
class Answer:
    """One final HTTP answer: its status, body text, parsed JSON and the attempts it took."""

    status: int
    body: str
    data: Any  # parsed JSON, or None when the body is not JSON (e.g. on a 404 HTML page)
    attempts: int


def one_line(text: str, limit: int = 200) -> str:
    """`text` on one line, cut to `limit` characters."""
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def api_message(answer: Answer) -> str:
    """The API's own message: {"message": ...}, a bare JSON string, or the body's start."""
    if isinstance(answer.data, dict) and isinstance(answer.data.get("message"), str):
        return one_line(answer.data["message"])
    if isinstance(answer.data, str):
        return one_line(answer.data)
    return one_line(answer.body) or f"HTTP {answer.status}"


def listed_ids(data: Any, where: str) -> list[int]:
    """Object ids from ``{"total": n, "objectIDs": [...] | null}``, deduplicated, in order."""
    if not isinstance(data, dict) or "objectIDs" not in data:
        raise ListingError(f"unexpected body from {where}: {one_line(json.dumps(data), 120)}")
    raw = data["objectIDs"] or []
    if not isinstance(raw, list):
        raise ListingError(f"unexpected objectIDs from {where}: {type(raw).__name__}")
    ids: list[int] = []
    seen: set[int] = set()
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ListingError(f"non-integer object id {value!r} from {where}")
        if not 0 < value <= MAX_OBJECT_ID:
            log.warning("object id %s from %s is out of range; left out", value, where)
            continue  # the listing then disagrees with its total: it withdraws nothing
        if value not in seen:
            seen.add(value)
            ids.append(value)
    return ids
