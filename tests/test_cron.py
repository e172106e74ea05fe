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
