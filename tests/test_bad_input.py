"""Bad input is refused where it is validated, before anything is written, sent or run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Self
from zoneinfo import available_timezones

import pytest
from celery import Celery
from pydantic import model_validator
from sqlalchemy import func, select

from batch import queries, runs, schedules
from batch.core import Core
from batch.cron import CronSchedule, make_schedule
from batch.exceptions import InvalidParams, InvalidSchedule, UserError
from batch.jobs import Job, Params
from batch.models import Run
from tests.conftest import wait_for_run
from tests.test_cli import cli
from tests.test_queries import SALES, add_run

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


# --- Cron lines ----------------------------------------------------------------------------------


@pytest.mark.parametrize("line", ["R * * * *", "r 6 * * *", "R(0-29) * * * *", "5 R/2 * * *"])
def test_a_cron_line_with_a_random_field_is_refused(line: str) -> None:
    # croniter drew a new value each time the line was read: no two next fire times agreed.
    message = "R (a random value) is not supported: give the value itself"
    with pytest.raises(InvalidSchedule) as raised:
        CronSchedule(line)
    assert raised.value.errors == {"cron": f"bad cron line {line!r}: {message}"}


def test_month_and_day_names_holding_an_r_are_still_names() -> None:
    after = datetime(2026, 1, 1, tzinfo=UTC)
    assert CronSchedule("0 6 * MAR,APR FRI").next_after(after) == datetime(
        2026, 3, 6, 6, tzinfo=UTC
    )


# --- Sales windows -------------------------------------------------------------------------------


def sales_params(core: Core, raw: dict[str, Any]) -> dict[str, Any]:
    job = core.jobs.get(SALES)
    return job.validate_params(raw, now=NOW).model_dump(mode="json")


SINCE_RANGE = "must be between 0001-01-02T00:00:00+00:00 and 9999-12-29T23:00:00+00:00"
UNTIL_RANGE = "must be between 0001-01-02T01:00:00+00:00 and 9999-12-30T00:00:00+00:00"


@pytest.mark.parametrize(
    ("raw", "errors"),
    [
        # The default since (an hour before until) was before the year 1: OverflowError.
        ({"until": "0001-01-01T00:30:00Z"}, {"until": UNTIL_RANGE}),
        ({"until": "0001-01-02T00:59:59Z"}, {"until": UNTIL_RANGE}),
        # The default until (an hour after since) was after the year 9999.
        ({"since": "9999-12-31T23:30:00Z"}, {"since": SINCE_RANGE}),
        ({"since": "9999-12-30T00:00:00Z"}, {"since": SINCE_RANGE}),
        # Valid as given, but not in UTC, where they are stored: the worker overflowed.
        (
            {"since": "0001-01-01T00:30:00+01:00", "until": "0001-01-01T01:30:00+01:00"},
            {"since": SINCE_RANGE, "until": UNTIL_RANGE},
        ),
        (
            {"since": "9999-12-31T22:00:00-02:00", "until": "9999-12-31T23:00:00-02:00"},
            {"since": SINCE_RANGE, "until": UNTIL_RANGE},
        ),
        (
            {"since": "2026-01-01T00:00:00Z", "until": "9999-12-31T23:59:59.999999Z"},
            {"until": UNTIL_RANGE},
        ),
    ],
)
def test_a_window_next_to_the_year_1_or_9999_is_refused_at_its_field(
    core: Core, celery_app: Celery, raw: dict[str, str], errors: dict[str, str]
) -> None:
    with pytest.raises(InvalidParams) as raised:
        sales_params(core, raw)
    assert raised.value.errors == errors
    with pytest.raises(InvalidParams) as raised:
        runs.submit_run(core, celery_app, SALES, raw, trigger="test")
    assert raised.value.errors == errors
    assert run_count(core) == 0


@pytest.mark.parametrize(
    ("raw", "window"),
    [
        ({"until": "0001-01-02T01:00:00Z"}, ("0001-01-02T00:00:00Z", "0001-01-02T01:00:00Z")),
        ({"since": "9999-12-29T23:00:00Z"}, ("9999-12-29T23:00:00Z", "9999-12-30T00:00:00Z")),
        (
            {"until": "0001-01-01T02:00:00-23:00"},
            ("0001-01-01T01:00:00-23:00", "0001-01-01T02:00:00-23:00"),
        ),
        (
            {"since": "9999-12-30T22:00:00+23:00"},
            ("9999-12-30T22:00:00+23:00", "9999-12-30T23:00:00+23:00"),
        ),
    ],
)
def test_a_window_at_the_edge_resolves_to_params_that_validate_again(
    core: Core, raw: dict[str, str], window: tuple[str, str]
) -> None:
    # The worker validates the resolved params again: its defaults must be in range too.
    resolved = sales_params(core, raw)
    assert (resolved["since"], resolved["until"]) == window
    assert sales_params(core, resolved) == resolved


def test_a_window_at_the_edge_runs_in_the_worker(core: Core, celery_app: Celery, worker) -> None:
    for raw in ({"until": "0001-01-02T01:00:00Z"}, {"since": "9999-12-29T23:00:00+00:00"}):
        run_id = runs.submit_run(core, celery_app, SALES, raw, trigger="test")
        run = wait_for_run(core, run_id)
        assert (run.status, run.error, run.result) == (
            "succeeded",
            None,
            {"regions": {}, "orders": 0},
        )


# --- Any job's params ----------------------------------------------------------------------------


class FarParams(Params):
    days: int = 1

    @model_validator(mode="after")
    def _far(self) -> Self:
        datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=self.days)
        return self


class FarJob(Job):
    name = "tests.far"
    params_model = FarParams


def test_date_arithmetic_overflowing_in_any_jobs_validator_is_invalid_params() -> None:
    with pytest.raises(InvalidParams) as raised:
        FarJob().validate_params({"days": 10**8}, now=NOW)
    assert raised.value.errors == {"params": "out of range: date value out of range"}


# --- Purge age -----------------------------------------------------------------------------------


@pytest.mark.parametrize("days", [36_501, 1_000_000, 10**30])
def test_purge_refuses_an_age_past_a_hundred_years(
    core: Core, celery_app: Celery, days: int
) -> None:
    message = "must be at most 36500"
    job = core.jobs.get("cleanups.purge_runs")
    with pytest.raises(InvalidParams) as raised:
        job.validate_params({"older_than_days": days}, now=NOW)
    assert raised.value.errors == {"older_than_days": message}
    with pytest.raises(InvalidParams):
        runs.submit_run(
            core, celery_app, "cleanups.purge_runs", {"older_than_days": days}, trigger="test"
        )
    assert run_count(core) == 0


def test_purge_runs_with_the_largest_age(core: Core, celery_app: Celery, worker) -> None:
    run_id = runs.submit_run(
        core, celery_app, "cleanups.purge_runs", {"older_than_days": 36_500}, trigger="test"
    )
    run = wait_for_run(core, run_id)
    assert (run.status, run.error, run.result) == ("succeeded", None, {"deleted_runs": 0})


# --- The runs list cursor ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        # In range as written, outside Python's dates in UTC, where runs are stored.
        "0001-01-01T00:00:00+01:00~x",
        "0001-01-01T00:00:00.000001+00:01~r1",
        "9999-12-31T23:59:59-01:00~x",
        "9999-12-31T23:00:00-23:59~x",
        # A run id PostgreSQL cannot compare (NUL), or one no run has.
        "2026-03-01T12:00:00+00:00~r\x001",
        "2026-03-01T12:00:00+00:00~r 1",
        "2026-03-01T12:00:00+00:00~é",
    ],
)
def test_cursors_outside_utc_dates_or_with_odd_ids_are_user_errors(core: Core, text: str) -> None:
    with pytest.raises(UserError, match="bad cursor"):
        queries.Cursor.parse(text)


def test_cursors_at_the_ends_of_time_page_from_there(core: Core) -> None:
    add_run(core, "r1")
    with core.reading() as session:
        first = queries.Cursor.parse("0001-01-01T00:00:00+00:00~x")
        last = queries.Cursor.parse("9999-12-31T23:59:59.999999+00:00~x")
        assert queries.list_runs(session, before=first).runs == []
        assert [run.id for run in queries.list_runs(session, before=last).runs] == ["r1"]
    assert str(queries.Cursor.parse("2026-03-01T13:00:00+01:00~r1")) == (
        "2026-03-01T12:00:00+00:00~r1"
    )


# --- The command line ----------------------------------------------------------------------------


@pytest.mark.parametrize("limit", ["0", "-1", "10001"])
def test_runs_list_with_a_limit_out_of_range_is_one_line(core: Core, limit: str) -> None:
    code, out, err = cli(core, "runs", "list", "--limit", limit)
    assert (code, out, err) == (2, "", f"error: bad limit {limit}: expected 1 to 10000\n")


def test_runs_list_with_a_limit_in_range(core: Core) -> None:
    add_run(core, "r1")
    add_run(core, "r2", minute=1)
    code, out, err = cli(core, "runs", "list", "--limit", "1")
    assert (code, err, [line.split()[0] for line in out.splitlines()]) == (0, "", ["r2"])


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["runs", "list", "--limit", "abc"],
         "Invalid value for '--limit': 'abc' is not a valid integer."),
        (["demo", "seed", "--orders", "-5"],
         "Invalid value for '--orders': -5 is not in the range 0<=x<=100000000."),
        (["dev", "--port", "70000"],
         "Invalid value for '--port': 70000 is not in the range 1<=x<=65535."),
    ],
)  # fmt: skip
def test_a_bad_option_value_is_one_error_line(core: Core, args: list[str], error: str) -> None:
    assert cli(core, *args) == (2, "", f"error: {error}\n")
