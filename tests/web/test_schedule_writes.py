"""RedBeat only ever follows a committed SQL state, and input no database can store is refused
at validation, before anything is written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy.exc
from celery import Celery
from flask.testing import FlaskClient

from batch import schedules
from batch.core import Core
from batch.exceptions import InvalidSchedule
from batch.models import Schedule
from batch.storable import NUL_MESSAGE, SURROGATE_MESSAGE
from tests.web.conftest import stored_state


def spec(**fields: object) -> schedules.ScheduleSpec:
    base = {"name": "hourly", "job": "tests.sum_squares", "params": {"n": 10}, "cron": "0 * * * *"}
    return schedules.ScheduleSpec(**{**base, **fields})


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("description", "a \ud800 b", SURROGATE_MESSAGE),
        ("description", "a \x00 b", NUL_MESSAGE),
        ("params", {"region\x00": 1}, NUL_MESSAGE),
        ("cron", "0 * * * *\x00", NUL_MESSAGE),
    ],
)
def test_text_no_database_stores_is_refused_and_nothing_is_written(
    core: Core, celery_app: Celery, api: FlaskClient, field: str, value: object, message: str
) -> None:
    schedules.save_schedule(core, celery_app, spec(), actor="test")
    before = stored_state(core)
    body = {"name": "other", "job": "tests.sum_squares", "cron": "0 * * * *", field: value}
    # json.dumps escapes the surrogate as \ud800, as any client would send it.
    created = api.post("/api/schedules", data=json.dumps(body), content_type="application/json")
    replaced = api.put(
        "/api/schedules/hourly",
        data=json.dumps({**body, "name": "hourly"}),
        content_type="application/json",
    )
    for response in (created, replaced):
        assert response.status_code == 400, response.get_data(as_text=True)
        assert response.get_json()["errors"][field] == message
    assert stored_state(core) == before


def test_a_commit_that_fails_leaves_redbeat_as_it_was(core: Core, celery_app: Celery) -> None:
    # Past validation (a spec built without it), the commit itself fails: RedBeat must not
    # have been written first, neither for a new schedule nor for an edit of one.
    schedules.save_schedule(core, celery_app, spec(), actor="test")
    before = stored_state(core)
    for name in ("hourly", "new-one"):
        unstorable = schedules.ScheduleSpec.model_construct(
            **{**spec().model_dump(), "name": name, "cron": "*/5 * * * *", "description": "\ud800"}
        )
        with pytest.raises(Exception) as failed:
            schedules.save_schedule(core, celery_app, unstorable, actor="test")
        assert not isinstance(failed.value, InvalidSchedule)
        assert stored_state(core) == before
    with core.reading() as session:
        assert session.get(Schedule, "hourly").cron == "0 * * * *"


def test_cron_lines_are_stored_normalised_and_bounded(core: Core) -> None:
    data = {"name": "spaced", "job": "tests.sum_squares", "cron": "  */5   *\t* * *  "}
    assert schedules.validate_schedule(core, data).cron == "*/5 * * * *"
    with pytest.raises(InvalidSchedule) as refused:
        schedules.validate_schedule(core, {**data, "cron": "0 * * * * " + "1" * 300})
    assert refused.value.errors["cron"] == "must have at most 200 characters"


@contextmanager
def refused_by_the_database(core: Core, event: str) -> Iterator[None]:
    """A trigger that makes the database refuse every ``event`` (UPDATE, DELETE) on schedules:
    a real commit-time failure, whatever validation let through."""
    postgres = core.engine.dialect.name == "postgresql"
    with core.engine.begin() as connection:
        if postgres:
            connection.exec_driver_sql(
                "CREATE FUNCTION refuse_schedules() RETURNS trigger AS"
                " $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$ LANGUAGE plpgsql"
            )
            connection.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE {event} ON schedules"
                " FOR EACH ROW EXECUTE FUNCTION refuse_schedules()"
            )
        else:
            connection.exec_driver_sql(
                f"CREATE TRIGGER refuse BEFORE {event} ON schedules"
                " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
    try:
        yield
    finally:
        with core.engine.begin() as connection:
            if postgres:
                connection.exec_driver_sql("DROP TRIGGER refuse ON schedules")
                connection.exec_driver_sql("DROP FUNCTION refuse_schedules()")
            else:
                connection.exec_driver_sql("DROP TRIGGER refuse")


@pytest.mark.parametrize(
    ("event", "change"),
    [
        ("UPDATE", lambda core, celery: schedules.set_enabled(core, celery, "hourly", False,
                                                              actor="test")),
        ("DELETE", lambda core, celery: schedules.remove_schedule(core, celery, "hourly",
                                                                  actor="test")),
    ],
)  # fmt: skip
def test_a_disable_or_delete_refused_at_commit_leaves_redbeat_as_it_was(
    core: Core, celery_app: Celery, event: str, change: Any
) -> None:
    schedules.save_schedule(core, celery_app, spec(), actor="test")
    before = stored_state(core)
    assert before[1]  # the entry beat fires from
    with refused_by_the_database(core, event), pytest.raises(sqlalchemy.exc.DatabaseError):
        change(core, celery_app)
    assert stored_state(core) == before
