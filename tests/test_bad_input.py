"""Bad input is refused where it is validated, before anything is written, sent or run."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import available_timezones

import pytest
from sqlalchemy import func, select

from batch import schedules
from batch.core import Core
from batch.cron import CronSchedule, make_schedule
from batch.exceptions import InvalidSchedule
from batch.models import Run
from tests.test_queries import SALES

NOW = datetime(2026, 11, 20, 10, 17, tzinfo=UTC)
TOO_LONG = "...: a name has at most 64 characters"


def run_count(core: Core) -> int:
    with core.reading() as session:
        return session.scalar(select(func.count()).select_from(Run))


# --- Timezones -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "message"),
    [
        # Folders of the tzdata package: ZoneInfo raised IsADirectoryError.
        ("America", "unknown timezone 'America'"),
        ("Europe", "unknown timezone 'Europe'"),
        ("Etc", "unknown timezone 'Etc'"),
        ("America/Argentina", "unknown timezone 'America/Argentina'"),
        # Longer than a file name may be: ZoneInfo raised OSError (File name too long).
        ("x" * 256, f"unknown timezone '{'x' * 32}'{TOO_LONG}"),
        ("Europe/" + "x" * 300, f"unknown timezone 'Europe/{'x' * 25}'{TOO_LONG}"),
        # Longer than the schedules.timezone column.
        ("Europe/" + "B" * 58, f"unknown timezone 'Europe/{'B' * 25}'{TOO_LONG}"),
    ],
)  # fmt: skip
def test_a_timezone_folder_or_overlong_name_is_an_unknown_timezone(
    core: Core, name: str, message: str
) -> None:
    for make in (
        lambda: CronSchedule("5 * * * *", name),
        lambda: make_schedule(cron=None, timezone=name, interval_seconds=60),
    ):
        with pytest.raises(InvalidSchedule) as raised:
            make()
        assert raised.value.errors == {"timezone": message}
    spec = {"name": "hourly", "job": SALES, "cron": "5 * * * *", "timezone": name}
    with pytest.raises(InvalidSchedule) as raised:
        schedules.validate_schedule(core, spec)
    assert raised.value.errors == {"timezone": message}


def test_every_zone_of_the_tz_database_is_still_a_timezone() -> None:
    for name in available_timezones():
        assert CronSchedule("5 * * * *", name).zone.key == name
