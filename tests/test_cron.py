"""Fire-time maths: cron lines in a timezone across clock changes, intervals, coalescing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batch.cron import CronSchedule, IntervalSchedule, make_schedule
from batch.exceptions import InvalidSchedule


def fires(schedule: CronSchedule, start: datetime, count: int) -> list[str]:
    out, moment = [], start
    for _ in range(count):
        moment = schedule.next_after(moment)
        out.append(moment.astimezone(schedule.zone).isoformat())
    return out


def test_fixed_time_fires_once_in_the_repeated_autumn_hour() -> None:
    nightly = CronSchedule("30 2 * * *", "Europe/Berlin")
    assert fires(nightly, datetime(2026, 10, 24, 12, tzinfo=UTC), 2) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
    ]


def test_wildcard_hours_fire_in_both_passes_of_the_repeated_hour() -> None:
    half_hourly = CronSchedule("*/30 * * * *", "Europe/Berlin")
    assert fires(half_hourly, datetime(2026, 10, 24, 23, 50, tzinfo=UTC), 5) == [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_a_time_skipped_in_spring_fires_right_after_the_change() -> None:
    nightly = CronSchedule("30 2 * * *", "Europe/Berlin")
    assert fires(nightly, datetime(2026, 3, 28, 12, tzinfo=UTC), 2) == [
        "2026-03-29T03:00:00+02:00",
        "2026-03-30T02:30:00+02:00",
    ]


def test_missed_fires_coalesce_into_the_latest_due_time() -> None:
    hourly = CronSchedule("5 * * * *", "UTC")
    last = datetime(2026, 11, 25, 6, 5, tzinfo=UTC)
    now = datetime(2026, 11, 25, 10, 7, tzinfo=UTC)
    assert hourly.latest_due(last, now) == datetime(2026, 11, 25, 10, 5, tzinfo=UTC)
    every = IntervalSchedule(10)
    assert every.latest_due(now - timedelta(seconds=35), now) == now - timedelta(seconds=5)
    assert every.latest_due(None, now) == now


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cron": "60 * * * *", "timezone": "UTC", "interval_seconds": None}, "cron"),
        ({"cron": "0 0 * * * *", "timezone": "UTC", "interval_seconds": None}, "cron"),
        ({"cron": "0 0 * * *", "timezone": "Europe/Nowhere", "interval_seconds": None}, "timezone"),
        ({"cron": None, "timezone": "UTC", "interval_seconds": 0}, "interval_seconds"),
        ({"cron": None, "timezone": "UTC", "interval_seconds": None}, "cron"),
    ],
)
def test_bad_timing_is_rejected(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidSchedule) as raised:
        make_schedule(**kwargs)
    assert list(raised.value.errors) == [field]


@pytest.mark.parametrize(
    ("cron", "timezone", "words"),
    [
        ("5 * * * *", "Europe/Berlin", "every hour at :05 (Europe/Berlin)"),
        ("30 3 * * *", "Europe/Berlin", "every day at 03:30 (Europe/Berlin)"),
        ("* * * * *", "UTC", "every minute (UTC)"),
        ("*/15 * * * *", "UTC", "every 15 minutes (UTC)"),
        ("*/1 * * * *", "UTC", "every minute (UTC)"),
        ("0 */2 * * *", "UTC", "every 2 hours at :00 (UTC)"),
        ("0 9 * * 1", "UTC", "every Monday at 09:00 (UTC)"),
        ("0 9 * * 7", "UTC", "every Sunday at 09:00 (UTC)"),
        ("15 0 1 * *", "UTC", "every month on day 1 at 00:15 (UTC)"),
        # No simple phrase: the line itself.
        ("5 4 * * 1-5", "UTC", "cron 5 4 * * 1-5 (UTC)"),
        ("*/7 * * * *", "UTC", "cron */7 * * * * (UTC)"),
        ("0 */5 * * *", "UTC", "cron 0 */5 * * * (UTC)"),
        ("5,35 * * * *", "UTC", "cron 5,35 * * * * (UTC)"),
        ("0 0 1 1 *", "UTC", "cron 0 0 1 1 * (UTC)"),
        ("0 9 * * mon", "UTC", "cron 0 9 * * mon (UTC)"),
    ],
)
def test_cron_in_words(cron: str, timezone: str, words: str) -> None:
    assert CronSchedule(cron, timezone).describe() == words


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (1, "every second"),
        (90, "every 90 seconds"),
        (60, "every minute"),
        (900, "every 15 minutes"),
        (3600, "every hour"),
        (7200, "every 2 hours"),
        (86400, "every day"),
        (172800, "every 2 days"),
        (3601, "every 3601 seconds"),
    ],
)
def test_interval_in_words(seconds: int, words: str) -> None:
    assert IntervalSchedule(seconds).describe() == words


def test_upcoming_cron_fires_cross_the_autumn_change_once() -> None:
    nightly = CronSchedule("30 2 * * *", "Europe/Berlin")
    times = nightly.upcoming(3, datetime(2026, 10, 24, 12, tzinfo=UTC))
    assert times == [
        datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
        datetime(2026, 10, 26, 1, 30, tzinfo=UTC),
        datetime(2026, 10, 27, 1, 30, tzinfo=UTC),
    ]
    assert all(moment.tzinfo is UTC for moment in times)


def test_upcoming_interval_fires_count_from_the_given_time() -> None:
    start = datetime(2026, 11, 25, 10, 0, 0, tzinfo=UTC)
    assert IntervalSchedule(900).upcoming(3, start) == [
        datetime(2026, 11, 25, 10, 15, tzinfo=UTC),
        datetime(2026, 11, 25, 10, 30, tzinfo=UTC),
        datetime(2026, 11, 25, 10, 45, tzinfo=UTC),
    ]
    assert IntervalSchedule(60).upcoming(0, start) == []


def test_an_interval_too_large_for_its_column_is_rejected() -> None:
    assert IntervalSchedule(2**31 - 1).seconds == 2**31 - 1
    for seconds in (2**31, 10**20):
        with pytest.raises(InvalidSchedule) as raised:
            IntervalSchedule(seconds)
        assert raised.value.errors == {
            "interval_seconds": "must be at most 2147483647 seconds (about 68 years)"
        }
