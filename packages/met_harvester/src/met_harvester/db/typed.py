"""Values for the typed columns of a record, or NULL with the reason when a column cannot hold one.

The raw JSON is stored exactly as received; the typed columns (`objects.title`,
`object_begin_date`, ...) are a convenience for queries. A value they cannot hold does not stop
the record: the column is left NULL and the reason goes to `objects.typed_issues` (a JSON list).
Reasons: an integer outside SQLite's 64-bit range, a value of the wrong type (a date that is not
an integer, a flag that is not a boolean), a string longer than `MAX_TYPED_TEXT` characters, or
text that is not valid Unicode (lone surrogates from a `\\ud800` escape).
"""

from __future__ import annotations

import json
from typing import Any

SQLITE_INT_MIN = -(2**63)
SQLITE_INT_MAX = 2**63 - 1
MAX_TYPED_TEXT = 65_536
"""Longest string copied into a typed column (real Met fields are at most a few KB)."""


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def fits_text(value: str) -> bool:
    """Whether a text column can hold `value`: at most `MAX_TYPED_TEXT` characters, valid
    Unicode (no lone surrogate)."""
    if len(value) > MAX_TYPED_TEXT:
        return False
    if value.isascii():  # no surrogate possible (a flag CPython keeps: no scan, no copy)
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def fits_int(value: int) -> bool:
    """Whether SQLite can store `value` as INTEGER (64-bit)."""
    return SQLITE_INT_MIN <= value <= SQLITE_INT_MAX


class TypedValues:
    """Collects the checked values of one record and the reasons for the NULLs."""

    def __init__(self, data: Any) -> None:
        self.data = data if isinstance(data, dict) else {}
        self.issues: list[str] = []

    def _raw(self, key: str) -> Any:
        return self.data.get(key)

    def text(self, key: str, value: str | None) -> str | None:
        """A text column: blank is NULL; too long or not valid Unicode is NULL with a reason."""
        if not value:
            if value is None and self._raw(key) not in (None, ""):
                self.issues.append(f"{key}: not text ({_preview(self._raw(key))})")
            return None
        return self.check_text(key, value)

    def check_text(self, key: str, value: str) -> str | None:
        """`value` if a text column can hold it, else None with a reason."""
        if fits_text(value):
            return value
        if len(value) > MAX_TYPED_TEXT:
            self.issues.append(f"{key}: {len(value):,} characters, over {MAX_TYPED_TEXT:,}")
        else:
            self.issues.append(f"{key}: not valid Unicode (lone surrogate)")
        return None

    def integer(self, key: str, value: int | None) -> int | None:
        """An integer column: out of SQLite's range or not an integer is NULL with a reason."""
        if value is None:
            if self._raw(key) not in (None, ""):
                self.issues.append(f"{key}: not an integer ({_preview(self._raw(key))})")
            return None
        return self.check_int(key, value)

    def check_int(self, key: str, value: int) -> int | None:
        """`value` if SQLite can store it as INTEGER, else None with a reason."""
        if not fits_int(value):
            self.issues.append(f"{key}: integer {_preview(value)} outside SQLite's 64-bit range")
            return None
        return value

    def flag(self, key: str, value: bool | None) -> int | None:
        """A boolean column as 0/1: a value that is not a boolean is NULL with a reason."""
        if value is None:
            if self._raw(key) not in (None, ""):
                self.issues.append(f"{key}: not a boolean ({_preview(self._raw(key))})")
            return None
        return int(value)

    def issues_json(self) -> str | None:
        """The reasons as a JSON list, or None when every typed column held its value."""
        if not self.issues:
            return None
        return json.dumps(self.issues, ensure_ascii=False)
