"""When the daemon runs next: every `--interval` (e.g. 6h, 30m, 45s) or daily `--at HH:MM` in a
time zone."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_INTERVAL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")


def parse_interval(text: str) -> float:
    """`"6h"` → 21600.0 seconds. A bare number is seconds. Raises ValueError with the input."""
    match = _INTERVAL.match(text)
    if not match:
        raise ValueError(f"bad interval {text!r}: use a number with s, m, h or d, e.g. 6h or 30m")
    seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"bad interval {text!r}: must be positive")
    return seconds


def parse_at(text: str) -> time:
    """`"03:00"` → time(3, 0). Raises ValueError with the input."""
    match = re.fullmatch(r"\s*(\d{1,2}):(\d{2})\s*", text)
    if not match or int(match.group(1)) > 23 or int(match.group(2)) > 59:
        raise ValueError(f"bad time {text!r}: use HH:MM, e.g. 03:00")
    return time(int(match.group(1)), int(match.group(2)))


@dataclass(frozen=True)
class Schedule:
    """Either a fixed interval in seconds, or a daily wall-clock time in a zone."""

    interval_s: float | None = None
    at: time | None = None
    zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))

    @classmethod
    def from_options(cls, interval: str | None, at: str | None, timezone: str) -> Schedule:
        """Build from the CLI options; exactly one of interval/at (interval 6h if neither)."""
        if interval and at:
            raise ValueError("give either --interval or --at, not both")
        try:
            zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {timezone!r}, e.g. UTC or America/New_York"
            ) from None
        if at:
            return cls(at=parse_at(at), zone=zone)
        return cls(interval_s=parse_interval(interval or "6h"), zone=zone)

    def next_run(self, now: datetime, last_start: datetime | None) -> datetime:
        """The next start time after `now` (aware datetimes)."""
        if self.interval_s is not None:
            if last_start is None:
                return now
            return max(now, last_start + timedelta(seconds=self.interval_s))
        assert self.at is not None
        local = now.astimezone(self.zone)
        candidate = datetime.combine(local.date(), self.at, tzinfo=self.zone)
        if candidate <= local:
            candidate = datetime.combine(
                local.date() + timedelta(days=1), self.at, tzinfo=self.zone
            )
        return candidate
