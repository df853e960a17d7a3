"""Schedule parsing and next-run computation for the daemon."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from met_harvester.daemon.schedule import Schedule, parse_at, parse_interval


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6h", 21600), ("30m", 1800), ("45s", 45), ("2", 2), ("1d", 86400), ("0.5s", 0.5)],
)
def test_parse_interval(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["", "6x", "h6", "-1h", "0"])
def test_bad_interval_names_the_input(text: str) -> None:
    with pytest.raises(ValueError, match="bad interval"):
        parse_interval(text)


def test_parse_at() -> None:
    assert parse_at("03:00") == time(3, 0)
    for bad in ("25:00", "3", "03:60", "noon"):
        with pytest.raises(ValueError, match="bad time"):
            parse_at(bad)


def test_interval_schedule_runs_now_then_every_interval() -> None:
    schedule = Schedule.from_options("2h", None, "UTC")
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert schedule.next_run(now, None) == now
    assert schedule.next_run(now, now - timedelta(minutes=30)) == now + timedelta(minutes=90)
    assert schedule.next_run(now, now - timedelta(hours=5)) == now


def test_daily_schedule_in_a_time_zone() -> None:
    schedule = Schedule.from_options(None, "03:00", "America/New_York")
    # 12:00 UTC on 1 Jan is 07:00 in New York: next 03:00 local is 2 Jan 08:00 UTC.
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert schedule.next_run(now, None).astimezone(UTC) == datetime(2026, 1, 2, 8, 0, tzinfo=UTC)
    # 07:30 UTC is 02:30 local: the run is the same day.
    early = datetime(2026, 1, 1, 7, 30, tzinfo=UTC)
    assert schedule.next_run(early, None).astimezone(UTC) == datetime(2026, 1, 1, 8, 0, tzinfo=UTC)


def test_schedule_option_errors() -> None:
    with pytest.raises(ValueError, match="not both"):
        Schedule.from_options("1h", "03:00", "UTC")
    with pytest.raises(ValueError, match="unknown time zone"):
        Schedule.from_options(None, "03:00", "Mars/Olympus")
