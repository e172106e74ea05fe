"""The admin's schedule pages: list, details, form, write-through, audit, run now, preview."""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from batch import schedules
from batch.celery_app import message_priority
from batch.core import Core
from batch.cron import CronSchedule, IntervalSchedule
from batch.db import utcnow
from batch.entries import BatchEntry
from batch.exceptions import InvalidSchedule
from batch.models import AuditEntry, Run, Schedule
from tests.conftest import wait_for_run
from tests.test_queries import T0, add_run
from tests.web.conftest import csrf_token, field_errors, stored_state

FORM = {
    "name": "hourly",
    "job": "tests.sum_squares",
    "params_job": "tests.sum_squares",
    "params.n": "10",
    "params.fail_chunk": "",
    "cron": "5 * * * *",
    "timezone": "Europe/Berlin",
    "interval_seconds": "",
    "enabled": "1",
    "overlap": "skip",
    "queue": "",
    "priority": "",
    "deadline_seconds": "",
    "description": "Squares, hourly",
}
STORED = {
    "name": "hourly",
    "job": "tests.sum_squares",
    "params": {"n": 10},
    "cron": "5 * * * *",
    "timezone": "Europe/Berlin",
    "interval_seconds": None,
    "enabled": True,
    "overlap": "skip",
    "queue": None,
    "priority": None,
    "deadline_seconds": None,
    "must_start_within_seconds": None,
    "must_succeed_within_seconds": None,
    "alert_after_failures": 1,
    "pause_after_failures": None,
    "catch_up": "latest",
    "catch_up_window_seconds": 86400,
    "catch_up_max": 10,
    "description": "Squares, hourly",
}


@pytest.fixture(autouse=True)
def _no_entries(core: Core) -> None:
    for key in core.redis.scan_iter(match="batch:redbeat:*"):
        core.redis.delete(key)


def count(core: Core, model: type) -> int:
    with core.reading() as session:
        return session.scalar(select(func.count()).select_from(model))


def stored(core: Core, name: str) -> dict[str, Any] | None:
    with core.reading() as session:
        row = session.get(Schedule, name)
        return schedules.schedule_as_dict(row) if row else None


def entry_exists(core: Core, celery_app: Celery, name: str) -> bool:
    return bool(core.redis.exists(BatchEntry.generate_key(celery_app, name)))


def entry_definition(core: Core, celery_app: Celery, name: str) -> dict[str, Any]:
    raw = core.redis.hget(BatchEntry.generate_key(celery_app, name), "definition")
    return BatchEntry.decode_definition(raw)


def audit(core: Core) -> list[tuple[str, str, str]]:
    with core.reading() as session:
        rows = session.scalars(select(AuditEntry).order_by(AuditEntry.id))
        return [(row.actor, row.action, row.object_name) for row in rows]


def post(client: FlaskClient, path: str, data: dict[str, Any] | None = None) -> Any:
    token = csrf_token(client, "/schedules/new")
    return client.post(path, data={**(data or {}), "csrf_token": token})


def create(client: FlaskClient, **changes: str) -> Any:
    return post(client, "/schedules/new", {**FORM, **changes})


def add_schedule(core: Core, celery_app: Celery, **changes: Any) -> None:
    data = {**STORED, **changes}
    spec = schedules.validate_schedule(core, data)
    schedules.save_schedule(core, celery_app, spec, actor="seed", mode="create")


# --- Login and CSRF -----------------------------------------------------------------------------

GETS = [
    "/schedules/",
    "/schedules/new",
    "/schedules/hourly",
    "/schedules/hourly/edit",
    "/schedules/preview?cron=5+*+*+*+*",
    "/schedules/hourly/backfill",
]
POSTS = [
    "/schedules/new",
    "/schedules/hourly/edit",
    "/schedules/hourly/delete",
    "/schedules/hourly/enable",
    "/schedules/hourly/disable",
    "/schedules/hourly/run",
    "/schedules/hourly/backfill",
    "/backfills/1/cancel",
]


def test_every_page_needs_a_signed_in_user(app: Flask, core: Core, celery_app: Celery) -> None:
    add_schedule(core, celery_app)
    anonymous = app.test_client()
    for path in GETS:
        response = anonymous.get(path)
        assert response.status_code == 302, path
        target = response.headers["Location"].removeprefix("/login?next=")
        assert unquote(target) == path
    token = csrf_token(anonymous)  # from /login: past CSRF, the sign-in check answers
    for path in POSTS:
        response = anonymous.post(path, data={**FORM, "csrf_token": token})
        assert response.status_code == 302, path
        assert response.headers["Location"] == f"/login?next={path}"
    assert stored(core, "hourly") == STORED
    assert audit(core) == [("seed", "create", "hourly")]


def test_every_form_needs_the_csrf_token(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    add_schedule(core, celery_app)
    for path in POSTS:
        response = client.post(path, data={**FORM, "name": "other", "cron": "7 * * * *"})
        assert response.status_code == 400, path
        assert "The CSRF token is missing." in response.get_data(as_text=True)
    assert stored(core, "hourly") == STORED
    assert count(core, Schedule) == 1 and count(core, Run) == 0
    assert audit(core) == [("seed", "create", "hourly")]
    assert entry_exists(core, celery_app, "hourly")


def test_every_form_on_the_pages_carries_the_csrf_token(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    add_schedule(core, celery_app)
    paths = ["/schedules/", "/schedules/new", "/schedules/hourly", "/schedules/hourly/edit",
             "/schedules/hourly/backfill"]  # fmt: skip
    for path in paths:
        page = client.get(path).get_data(as_text=True)
        forms = re.findall(r"<form method=\"post\".*?</form>", page, re.S)
        assert forms, path
        assert all('name="csrf_token"' in form for form in forms), path


# --- Create --------------------------------------------------------------------------------------


def test_create_stores_audits_and_writes_through(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    response = create(client)
    assert (response.status_code, response.headers["Location"]) == (302, "/schedules/hourly")
    assert stored(core, "hourly") == STORED
    assert audit(core) == [("user:admin", "create", "hourly")]
    definition = entry_definition(core, celery_app, "hourly")
    assert definition["schedule"] == CronSchedule("5 * * * *", "Europe/Berlin")
    assert definition["kwargs"]["params"] == {"n": 10}
    assert definition["kwargs"]["overlap"] == "skip"
    page = client.get("/schedules/hourly").get_data(as_text=True)
    assert "Schedule hourly created." in page
    assert "every hour at :05 (Europe/Berlin)" in page


def test_create_with_an_interval_and_every_option(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    response = create(
        client,
        name="quarterly",
        cron="",
        interval_seconds="900",
        queue="reports",
        priority="7",
        deadline_seconds="60",
        **{"params.n": "", "params.fail_chunk": "3"},
    )
    assert response.status_code == 302
    assert stored(core, "quarterly") == {
        **STORED,
        "name": "quarterly",
        "params": {"fail_chunk": 3},
        "cron": None,
        "interval_seconds": 900,
        "queue": "reports",
        "priority": 7,
        "deadline_seconds": 60,
    }
    definition = entry_definition(core, celery_app, "quarterly")
    assert definition["schedule"] == IntervalSchedule(900)
    assert definition["options"] == {
        "queue": "reports",
        "priority": message_priority(celery_app, 7),  # 9 - 7 on a Redis broker
    }


def test_a_disabled_schedule_is_stored_without_an_entry(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    data = {key: value for key, value in FORM.items() if key != "enabled"}
    assert post(client, "/schedules/new", data).status_code == 302
    assert stored(core, "hourly") == {**STORED, "enabled": False}
    assert not entry_exists(core, celery_app, "hourly")


BAD_INPUT = [
    (
        {"cron": "61 * * * *"},
        "cron",
        "bad cron line '61 * * * *': [61 * * * *] is not acceptable, out of range",
    ),
    ({"cron": "5 * * *"}, "cron", "expected 5 fields, got '5 * * *'"),
    ({"timezone": "Moon/Base"}, "timezone", "unknown timezone 'Moon/Base'"),
    (
        {"params.n": "ten"},
        "params.n",
        "must be a whole number, not 'ten'",
    ),
    ({"params.n": "-1"}, "params.n", "must be at least 0"),
    (
        {"interval_seconds": "60"},
        "cron",
        "give exactly one of a cron line or an interval",
    ),
    ({"cron": ""}, "cron", "give exactly one of a cron line or an interval"),
    ({"cron": "", "interval_seconds": "0"}, "interval_seconds", "must be at least 1 second"),
    (
        {"cron": "", "interval_seconds": "100000000000000000000"},
        "interval_seconds",
        "must be at most 2147483647 seconds (about 68 years)",
    ),
    (
        {"name": "bad name!"},
        "name",
        "use 1 to 200 letters, digits, '_', '.', ':' or '-', starting with a letter or digit",
    ),
    ({"job": "tests.nope", "params_job": "tests.nope"}, "job", "unknown job 'tests.nope'"),
    ({"priority": "10"}, "priority", "must be at most 9"),
    ({"deadline_seconds": "0"}, "deadline_seconds", "must be at least 1"),
    ({"queue": "fast"}, "queue", "must be 'default', 'reports' or 'cleanups', not 'fast'"),
]


def test_bad_input_is_shown_at_its_field_and_nothing_is_stored(
    client: FlaskClient, core: Core
) -> None:
    # One test for every case: signing in (a password hash) is the slow part of a test.
    for changes, field, message in BAD_INPUT:
        response = create(client, **changes)
        page = response.get_data(as_text=True)
        assert response.status_code == 400, changes
        assert field_errors(page) == {field: message}, changes
        assert count(core, Schedule) == count(core, AuditEntry) == 0, changes
        assert list(core.redis.scan_iter(match="batch:redbeat:*")) == [], changes
        # What the user typed is kept.
        for key, value in changes.items():
            if key not in ("job", "params_job", "queue"):
                assert f'name="{key}"' in page, (changes, key)
                assert f'value="{html.escape(value)}"' in page, (changes, key)


def test_every_bad_field_is_shown_at_once_each_once(client: FlaskClient, core: Core) -> None:
    bad = {"name": "bad name!", "cron": "61 * * * *", "params.n": "ten", "priority": "10"}
    response = create(client, **bad)
    page = html.unescape(response.get_data(as_text=True))
    errors = {
        "name": "use 1 to 200 letters, digits, '_', '.', ':' or '-', starting with a letter or"
        " digit",
        "cron": "bad cron line '61 * * * *': [61 * * * *] is not acceptable, out of range",
        "params.n": "must be a whole number, not 'ten'",
        "priority": "must be at most 9",
    }
    assert response.status_code == 400
    assert field_errors(response.get_data(as_text=True)) == errors
    assert all(page.count(message) == 1 for message in errors.values())
    assert count(core, Schedule) == count(core, AuditEntry) == 0


def test_deadlines_the_failure_streak_and_catch_up_are_set_in_the_form(
    client: FlaskClient, core: Core
) -> None:
    bad = {
        "must_start_within_seconds": "0",
        "must_succeed_within_seconds": "soon",
        "alert_after_failures": "1001",
        "catch_up": "some",
        "catch_up_window_seconds": "59",
        "catch_up_max": "1001",
    }
    response = create(client, **bad)
    assert response.status_code == 400
    assert field_errors(response.get_data(as_text=True)) == {
        "must_start_within_seconds": "must be at least 1",
        "must_succeed_within_seconds": "must be a whole number, not 'soon'",
        "alert_after_failures": "must be at most 1000",
        "catch_up": "must be 'skip', 'latest' or 'each', not 'some'",
        "catch_up_window_seconds": "must be at least 60",
        "catch_up_max": "must be at most 1000",
    }
    assert count(core, Schedule) == 0

    good = {
        "must_start_within_seconds": "600",
        "must_succeed_within_seconds": "3600",
        "alert_after_failures": "3",
        "pause_after_failures": "5",
        "catch_up": "each",
        "catch_up_window_seconds": "7200",
        "catch_up_max": "4",
    }
    assert create(client, **good).status_code == 302
    assert stored(core, "hourly") == STORED | {
        "must_start_within_seconds": 600,
        "must_succeed_within_seconds": 3600,
        "alert_after_failures": 3,
        "pause_after_failures": 5,
        "catch_up": "each",
        "catch_up_window_seconds": 7200,
        "catch_up_max": 4,
    }
    page = html.unescape(client.get("/schedules/hourly").get_data(as_text=True))
    shown_values = ("600 s", "3600 s", "3 failures in a row", "5 failures in a row",
                    "each runs, within 7200 s, at most 4")  # fmt: skip
    for shown in (f"<dd>{value}</dd>" for value in shown_values):
        assert shown in page
    edit = client.get("/schedules/hourly/edit").get_data(as_text=True)
    assert 'name="alert_after_failures" type="number" min="1" max="1000" step="1" value="3"' in edit


def test_a_duplicate_name_is_a_conflict_at_the_name(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    add_schedule(core, celery_app)
    before = core.redis.hgetall(BatchEntry.generate_key(celery_app, "hourly"))
    response = create(client, cron="10 * * * *", description="another")
    assert response.status_code == 409
    assert field_errors(response.get_data(as_text=True)) == {
        "name": "schedule 'hourly' already exists"
    }
    assert stored(core, "hourly") == STORED
    assert audit(core) == [("seed", "create", "hourly")]
    assert core.redis.hgetall(BatchEntry.generate_key(celery_app, "hourly")) == before


def test_an_error_of_the_params_as_a_whole_is_shown_with_them(
    client: FlaskClient, core: Core
) -> None:
    response = create(
        client,
        job="reports.sales_summary",
        params_job="reports.sales_summary",
        **{"params.since": "2026-01-02T00:00:00+00:00", "params.until": "2026-01-01T00:00:00Z"},
    )
    assert response.status_code == 400
    assert field_errors(response.get_data(as_text=True)) == {"params": "since must be before until"}
    assert count(core, Schedule) == 0


# --- The form ------------------------------------------------------------------------------------


def test_the_form_offers_registered_jobs_and_draws_their_params(
    client: FlaskClient, core: Core
) -> None:
    page = client.get("/schedules/new?job=reports.sales_summary").get_data(as_text=True)
    select = re.search(r'<select id="job" name="job">(.*?)</select>', page, re.S)
    assert select is not None
    options = re.findall(r'<option value="([^"]+)" ?(selected)?>\1</option>', select.group(1))
    assert options == [
        ("cleanups.purge_runs", ""),
        ("reports.sales_summary", "selected"),
        ("tests.sum_squares", ""),
        ("tests.sum_squares_reports", ""),
    ]
    inputs = re.findall(r'<input type="(\w+)" id="param-(\w+)" name="params\.\2"', page)
    assert inputs == [("text", "since"), ("text", "until")]
    assert 'placeholder="2026-01-31T00:00:00+00:00"' in page
    blob = re.search(r'<script type="application/json" id="schedule-jobs">(.*?)</script>', page)
    assert blob is not None
    jobs = json.loads(blob.group(1))
    assert sorted(jobs) == [job.name for job in core.jobs]
    assert [
        (f["name"], f["input"], f["placeholder"], f["hint"])
        for f in jobs["tests.sum_squares"]["fields"]
    ] == [
        ("n", "number", "1000", "default 1000"),
        ("fail_chunk", "number", "", "optional: blank means the job's default"),
        ("fail_while_file", "text", "", "optional: blank means the job's default"),
    ]
    assert jobs["cleanups.purge_runs"]["fields"][0]["minimum"] == 1


def test_switching_job_without_javascript_redraws_the_params_first(
    client: FlaskClient, core: Core
) -> None:
    response = create(client, job="cleanups.purge_runs")
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Params fields for cleanups.purge_runs are shown below" in page
    assert re.findall(r'name="params\.(\w+)"', page) == ["older_than_days"]
    assert 'name="params_job" id="params-job" value="cleanups.purge_runs"' in page
    assert count(core, Schedule) == 0
    response = create(client, job="cleanups.purge_runs", params_job="cleanups.purge_runs")
    assert response.status_code == 302
    assert stored(core, "hourly") == {**STORED, "job": "cleanups.purge_runs", "params": {}}


def test_the_edit_form_is_filled_in(client: FlaskClient, core: Core, celery_app: Celery) -> None:
    add_schedule(core, celery_app, priority=3, queue="cleanups")
    page = client.get("/schedules/hourly/edit").get_data(as_text=True)
    assert '<input id="name" value="hourly" disabled>' in page
    assert re.search(r'name="params\.n"\s+value="10"', page)
    assert 'name="cron" value="5 * * * *"' in page
    assert 'name="timezone" value="Europe/Berlin"' in page
    assert 'name="priority" type="number" min="0" max="9" step="1" value="3"' in page
    assert '<option value="cleanups" selected>cleanups</option>' in page
    assert '<option value="skip" selected>' in page
    assert 'name="enabled" value="1" checked' in page


# --- Edit, enable, disable, delete ---------------------------------------------------------------


def test_edit_writes_through_and_shows_in_the_audit_log(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    add_schedule(core, celery_app)
    response = post(
        client,
        "/schedules/hourly/edit",
        {**FORM, "name": "ignored", "cron": "30 3 * * *", "params.n": "20", "priority": "0"},
    )
    assert (response.status_code, response.headers["Location"]) == (302, "/schedules/hourly")
    changed = {"cron": "30 3 * * *", "params": {"n": 20}, "priority": 0}
    assert stored(core, "hourly") == {**STORED, **changed}
    assert count(core, Schedule) == 1
    definition = entry_definition(core, celery_app, "hourly")
    assert definition["schedule"] == CronSchedule("30 3 * * *", "Europe/Berlin")
    assert definition["kwargs"]["params"] == {"n": 20}
    assert audit(core) == [("seed", "create", "hourly"), ("user:admin", "update", "hourly")]
    page = client.get("/schedules/hourly").get_data(as_text=True)
    rows = re.findall(
        r"<tr>\s*<td class=\"mono\">(.*?)</td>\s*<td>(.*?)</td>\s*<td>(.*?)</td>", page
    )
    assert [(who, action) for _, who, action in rows] == [
        ("user:admin", "update"),
        ("seed", "create"),
    ]
    changes = re.findall(
        r"<li><code>(\w+)</code>:\s*<del>(.*?)</del> →\s*<ins>(.*?)</ins></li>", page
    )
    assert [(name, html.unescape(a), html.unescape(b)) for name, a, b in changes] == [
        ("params", '{"n": 10}', '{"n": 20}'),
        ("cron", "5 * * * *", "30 3 * * *"),
        ("priority", "—", "0"),
    ]
    assert "every day at 03:30 (Europe/Berlin)" in page


def test_a_bad_edit_changes_nothing(client: FlaskClient, core: Core, celery_app: Celery) -> None:
    add_schedule(core, celery_app)
    before = core.redis.hgetall(BatchEntry.generate_key(celery_app, "hourly"))
    response = post(client, "/schedules/hourly/edit", {**FORM, "cron": "5 25 * * *"})
    assert response.status_code == 400
    assert list(field_errors(response.get_data(as_text=True))) == ["cron"]
    assert stored(core, "hourly") == STORED
    assert audit(core) == [("seed", "create", "hourly")]
    assert core.redis.hgetall(BatchEntry.generate_key(celery_app, "hourly")) == before


def test_disable_and_enable(client: FlaskClient, core: Core, celery_app: Celery) -> None:
    add_schedule(core, celery_app)
    response = post(client, "/schedules/hourly/disable")
    assert (response.status_code, response.headers["Location"]) == (302, "/schedules/hourly")
    assert stored(core, "hourly") == {**STORED, "enabled": False}
    assert not entry_exists(core, celery_app, "hourly")
    page = client.get("/schedules/").get_data(as_text=True)
    assert '<span class="state off">no</span>' in page
    response = post(client, "/schedules/hourly/enable", {"back": "index"})
    assert (response.status_code, response.headers["Location"]) == (302, "/schedules/")
    assert stored(core, "hourly") == STORED
    assert entry_exists(core, celery_app, "hourly")
    assert audit(core) == [
        ("seed", "create", "hourly"),
        ("user:admin", "disable", "hourly"),
        ("user:admin", "enable", "hourly"),
    ]


def test_delete(client: FlaskClient, core: Core, celery_app: Celery) -> None:
    add_schedule(core, celery_app)
    response = post(client, "/schedules/hourly/delete")
    assert (response.status_code, response.headers["Location"]) == (302, "/schedules/")
    assert stored(core, "hourly") is None
    assert not entry_exists(core, celery_app, "hourly")
    assert audit(core) == [("seed", "create", "hourly"), ("user:admin", "delete", "hourly")]
    assert client.get("/schedules/hourly").status_code == 404


def test_unknown_schedules_are_404(client: FlaskClient, core: Core) -> None:
    for path in ["/schedules/ghost", "/schedules/ghost/edit"]:
        assert client.get(path).status_code == 404, path
    for path in [p.replace("hourly", "ghost") for p in POSTS[1:]]:
        assert post(client, path, FORM).status_code == 404, path
    assert count(core, Schedule) == count(core, AuditEntry) == count(core, Run) == 0


# --- The list and the details --------------------------------------------------------------------


def test_the_list_shows_timing_next_fire_and_last_run(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    add_schedule(core, celery_app)
    add_schedule(core, celery_app, name="quarterly", cron=None, interval_seconds=900)
    add_schedule(core, celery_app, name="off", enabled=False)
    created = datetime(2026, 11, 25, 10, 5, 1, tzinfo=UTC)
    with core.transaction() as session:
        for minutes, status in [(0, "failed"), (60, "succeeded")]:
            session.add(
                Run(
                    id=f"run-{minutes}",
                    job="tests.sum_squares",
                    params={},
                    status=status,
                    trigger="schedule:hourly",
                    schedule_name="hourly",
                    queue="default",
                    created_at=created + timedelta(minutes=minutes),
                )
            )
    metas = {
        name: BatchEntry.load_meta(BatchEntry.generate_key(celery_app, name), app=celery_app)
        for name in ("hourly", "quarterly")
    }
    hourly_next = CronSchedule("5 * * * *", "Europe/Berlin").next_after(
        metas["hourly"]["last_run_at"]
    )
    quarterly_next = metas["quarterly"]["last_run_at"] + timedelta(seconds=900)
    page = client.get("/schedules/").get_data(as_text=True)
    rows = re.findall(
        r'<tr id="schedule-([\w.:-]+)">.*?<td class="words">(.*?)</td>\s*'
        r'<td class="next">(.*?)</td>\s*<td class="last">(.*?)</td>\s*'
        r'<td class="enabled">.*?<span class="state \w+">(\w+)</span>',
        page,
        re.S,
    )
    shown = [(name, words, nxt, " ".join(last.split()), on) for name, words, nxt, last, on in rows]
    assert shown == [
        (
            "hourly",
            "every hour at :05 (Europe/Berlin)",
            # In the schedule's zone with the weekday, then in UTC (Berlin is never UTC+0).
            hourly_next.astimezone(CronSchedule("5 * * * *", "Europe/Berlin").zone).strftime(
                "%a %Y-%m-%d %H:%M:%S %Z"
            )
            + f" ({hourly_next.astimezone(UTC):%H:%M:%S} UTC)",
            '<a href="/runs/run-60"><span class="status succeeded">succeeded</span></a> '
            '<span class="muted">2026-11-25 11:05:01 UTC</span>',
            "yes",
        ),
        ("off", "every hour at :05 (Europe/Berlin)", "—", '<span class="muted">never</span>', "no"),
        (
            "quarterly",
            "every 15 minutes",
            quarterly_next.strftime("%a %Y-%m-%d %H:%M:%S UTC"),
            '<span class="muted">never</span>',
            "yes",
        ),
    ]


def test_the_details_show_the_next_five_fire_times(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    add_schedule(core, celery_app, name="quarterly", cron=None, interval_seconds=900)
    key = BatchEntry.generate_key(celery_app, "quarterly")
    last = BatchEntry.load_meta(key, app=celery_app)["last_run_at"]
    page = client.get("/schedules/quarterly").get_data(as_text=True)
    listed = re.search(r'<ol class="upcoming">(.*?)</ol>', page)
    assert listed is not None
    assert re.findall(r"<li>(.*?)</li>", listed.group(1)) == [
        (last + timedelta(seconds=900 * k)).strftime("%a %Y-%m-%d %H:%M:%S UTC")
        for k in range(1, 6)
    ]
    assert "every 15 minutes" in page and "Never run." in page


def test_the_details_show_the_recent_runs_with_their_durations_and_a_link_to_all(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    add_schedule(core, celery_app, name="hourly")
    for minute in range(25):  # r00 oldest; every run took (minute % 4 + 1) seconds
        add_run(
            core,
            f"r{minute:02d}",
            minute=minute,
            schedule_name="hourly",
            trigger="schedule:hourly",
            finished_at=T0 + timedelta(minutes=minute, seconds=minute % 4 + 1),
        )
    add_run(core, "other", minute=30, schedule_name="daily", trigger="schedule:daily")
    page = client.get("/schedules/hourly").get_data(as_text=True)
    history = page[page.index('id="history"') : page.index("Audit log")]
    shown = re.findall(r'<tr data-run-id="([^"]+)">', history)
    assert shown == [f"r{minute:02d}" for minute in range(24, 4, -1)]  # the newest 20
    assert "4.0 s" in history and "1.0 s" in history
    points = re.findall(r"<title>duration \(s\), ([^<]+): ([0-9.]+)</title>", history)
    assert [float(value) for _, value in points] == [minute % 4 + 1 for minute in range(5, 25)]
    assert points[-1][0] == (T0 + timedelta(minutes=24)).strftime("%Y-%m-%d %H:%M:%S UTC")
    assert 'href="/runs/?schedule=hourly"' in history
    assert client.get("/schedules/daily").status_code == 404  # runs of a deleted schedule stay


def test_schedules_from_files_are_marked_and_admin_edits_keep_their_file(
    client: FlaskClient, core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    (tmp_path / "hourly.toml").write_text('job = "tests.sum_squares"\ncron = "5 * * * *"\n')
    schedules.import_schedules(core, celery_app, tmp_path, actor="deploy")
    add_schedule(core, celery_app, name="by-hand")
    source = (tmp_path / "hourly.toml").as_posix()
    marker = f'<span class="status from-file" title="Defined in {source}">file</span>'

    page = client.get("/schedules/").get_data(as_text=True)
    rows = dict(re.findall(r'<tr id="schedule-([\w.:-]+)">(.*?)</tr>', page, re.S))
    assert {name: marker in row for name, row in rows.items()} == {"by-hand": False, "hourly": True}
    assert page.count('class="status from-file"') == 1

    page = client.get("/schedules/hourly").get_data(as_text=True)
    notice = re.search(r'<p class="flash" id="source">(.*?)</p>', page, re.S)
    assert notice is not None
    assert " ".join(notice.group(1).split()) == (
        f"Defined in <code>{source}</code>. Edits made here stay until"
        " <code>batch schedules import</code> applies that file again."
    )
    assert 'id="source"' not in client.get("/schedules/by-hand").get_data(as_text=True)

    # An edit in the admin keeps the file; the import's audit entry names it.
    response = post(client, "/schedules/hourly/edit", {**FORM, "cron": "7 * * * *"})
    assert (response.status_code, response.headers["Location"]) == (302, "/schedules/hourly")
    with core.reading() as session:
        assert session.get(Schedule, "hourly").source == source
    page = client.get("/schedules/hourly").get_data(as_text=True)
    assert 'id="source"' in page
    created = re.findall(r"<li><code>source</code>:\s*<ins>(.*?)</ins></li>", page)
    assert created == [source]
    assert audit(core) == [
        ("deploy", "create", "hourly"),
        ("seed", "create", "by-hand"),
        ("user:admin", "update", "hourly"),
    ]


# --- Run now -------------------------------------------------------------------------------------


def test_run_now_queues_a_run_that_succeeds(
    client: FlaskClient, core: Core, celery_app: Celery, worker: Path
) -> None:
    add_schedule(core, celery_app)
    response = post(client, "/schedules/hourly/run")
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/runs/")
    run = wait_for_run(core, location.removeprefix("/runs/"))
    assert (run.status, run.job, run.params, run.trigger, run.result) == (
        "succeeded",
        "tests.sum_squares",
        {"n": 10, "fail_chunk": None, "fail_while_file": None},
        "user:admin via schedule hourly",
        {"sum": 285},
    )


def test_run_now_counts_as_the_schedules_run_on_its_queue(
    client: FlaskClient, core: Core, celery_app: Celery, worker: Path
) -> None:
    add_schedule(core, celery_app, queue="cleanups", priority=3)
    location = post(client, "/schedules/hourly/run").headers["Location"]
    run = wait_for_run(core, location.removeprefix("/runs/"))
    assert (run.status, run.schedule_name, run.queue, run.scheduled_for) == (
        "succeeded",
        "hourly",
        "cleanups",
        None,
    )
    listing = client.get("/schedules/").get_data(as_text=True)
    assert f"/runs/{run.id}" in listing


def test_run_now_with_params_the_job_no_longer_accepts_is_refused(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    add_schedule(core, celery_app)
    with core.transaction() as session:
        session.get(Schedule, "hourly").params = {"n": "many"}
    response = post(client, "/schedules/hourly/run")
    assert response.status_code == 400
    assert (
        "Not run: invalid params for tests.sum_squares: n: must be a whole number, not 'many'"
        in html.unescape(response.get_data(as_text=True))
    )
    assert count(core, Run) == 0


# --- Preview -------------------------------------------------------------------------------------


def test_preview_gives_the_next_five_cron_fires_in_the_zone(client: FlaskClient) -> None:
    nightly = CronSchedule("30 2 * * *", "America/New_York")
    before = utcnow()
    response = client.get("/schedules/preview?cron=30+2+*+*+*&timezone=America/New_York")
    after = utcnow()
    assert response.status_code == 200
    expected = [
        [moment.astimezone(nightly.zone).isoformat() for moment in nightly.upcoming(5, start)]
        for start in (before, after)
    ]
    assert response.json["times"] in expected
    assert all("T02:30:00-0" in time for time in response.json["times"])


def test_preview_gives_the_next_five_interval_fires(client: FlaskClient) -> None:
    before = utcnow()
    response = client.get("/schedules/preview?interval_seconds=3600&cron=&timezone=UTC")
    after = utcnow()
    times = [datetime.fromisoformat(time) for time in response.json["times"]]
    assert len(times) == 5
    assert before + timedelta(hours=1) <= times[0] <= after + timedelta(hours=1)
    assert [b - a for a, b in zip(times, times[1:], strict=False)] == [timedelta(hours=1)] * 4
    assert all(time.utcoffset() == timedelta(0) for time in times)


def test_preview_of_a_cron_line_matches_hand_computed_fires(client: FlaskClient) -> None:
    response = client.get("/schedules/preview?cron=*+*+*+*+*")
    times = [datetime.fromisoformat(time) for time in response.json["times"]]
    first = times[0]
    assert (first.second, first.microsecond, first.tzinfo is not None) == (0, 0, True)
    assert times == [first + timedelta(minutes=k) for k in range(5)]


def test_preview_of_bad_timing_is_a_400_with_errors(client: FlaskClient) -> None:
    with pytest.raises(InvalidSchedule) as raised:
        CronSchedule("61 * * * *")
    exactly_one = {"cron": "give exactly one of a cron line or an interval"}
    too_large = "must be at most 2147483647 seconds (about 68 years)"
    cases = [
        ("cron=61+*+*+*+*", raised.value.errors),
        ("cron=5+*+*+*+*&timezone=Moon/Base", {"timezone": "unknown timezone 'Moon/Base'"}),
        ("cron=", exactly_one),
        ("cron=5+*+*+*+*&interval_seconds=60", exactly_one),
        ("interval_seconds=soon", {"interval_seconds": "must be a whole number of seconds"}),
        ("interval_seconds=0", {"interval_seconds": "must be at least 1 second"}),
        ("interval_seconds=1000000000000", {"interval_seconds": too_large}),
    ]
    for query, errors in cases:
        response = client.get(f"/schedules/preview?{query}")
        assert (response.status_code, response.json) == (400, {"errors": errors}), query


# --- The list at scale: pages, search, filters, bulk enable/disable ------------------------------

LISTED = re.compile(r'<tr id="schedule-([\w.:-]+)">')


def seed_many(core: Core, celery_app: Celery, folder: Path, count: int) -> None:
    """``count`` schedules s-000.. from files: every third a cleanup, the rest sales summaries."""
    folder.mkdir()
    for index in range(count):
        job = "cleanups.purge_runs" if index % 3 == 0 else "reports.sales_summary"
        (folder / f"s-{index:03d}.toml").write_text(
            f'job = "{job}"\ncron = "{index % 60} * * * *"\n'
        )
    schedules.import_schedules(core, celery_app, folder, actor="seed")


def test_the_list_is_paged_searched_and_filtered_in_the_url(
    client: FlaskClient, core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    seed_many(core, celery_app, tmp_path / "s", 120)
    schedules.set_enabled_many(core, celery_app, ["s-003", "s-004"], False, actor="t")

    first = client.get("/schedules/").get_data(as_text=True)
    assert LISTED.findall(first) == [f"s-{i:03d}" for i in range(50)]
    assert "page 1 of 3" in first and 'href="/schedules/?page=2"' in first
    third = client.get("/schedules/?page=3").get_data(as_text=True)
    assert LISTED.findall(third) == [f"s-{i:03d}" for i in range(100, 120)]
    assert "page 3 of 3" in third and 'rel="next"' not in third
    # The last page and a short first page give the total without a count query.
    assert "120 schedules</span>" in first and "120 schedules</span>" in third

    found = client.get("/schedules/?q=S-11").get_data(as_text=True)
    assert LISTED.findall(found) == [f"s-{i:03d}" for i in range(110, 120)]
    assert "10 schedules match" in found
    assert LISTED.findall(client.get("/schedules/?enabled=no").get_data(as_text=True)) == [
        "s-003",
        "s-004",
    ]
    cleanups = client.get("/schedules/?queue=cleanups&enabled=yes&page=1").get_data(as_text=True)
    assert LISTED.findall(cleanups) == [f"s-{i:03d}" for i in range(0, 120, 3) if i != 3]
    second = client.get("/schedules/?job=reports.sales_summary&page=2").get_data(as_text=True)
    assert len(LISTED.findall(second)) == 30 and "page 2 of 2" in second
    assert 'href="/schedules/?page=1&amp;job=reports.sales_summary"' in second
    assert '<input type="hidden" name="job" value="reports.sales_summary">' in second
    assert "No schedules match" in client.get("/schedules/?q=zzz").get_data(as_text=True)


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("page=0", 400, "bad page 0: expected 1 to 100000"),
        ("page=x", 400, "bad page &#39;x&#39;: expected a whole number"),
        ("page=100001", 400, "bad page 100001"),
        ("job=nope", 400, "nope"),
        ("queue=nope", 400, "unknown queue &#39;nope&#39;"),
        ("enabled=maybe", 400, "bad enabled &#39;maybe&#39;: expected yes or no"),
        ("q=a%00b", 400, "bad search: must not contain NUL characters"),
    ],
)
def test_a_bad_list_query_is_an_error_page(
    client: FlaskClient, query: str, status: int, message: str
) -> None:
    response = client.get(f"/schedules/?{query}")
    assert response.status_code == status
    assert message in response.get_data(as_text=True)


def test_bad_list_filters_are_shown_at_their_fields_at_once(client: FlaskClient) -> None:
    response = client.get("/schedules/?job=no.job&queue=nope&enabled=maybe&q=hour")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert field_errors(page) == {
        "job": "unknown job 'no.job'",
        "queue": "unknown queue 'nope'",
        "enabled": "bad enabled 'maybe': expected yes or no",
    }
    assert 'name="q" value="hour"' in page and 'id="filter-errors"' in page


def test_enable_and_disable_selected_change_each_once_and_go_back_to_the_list(
    client: FlaskClient, core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    seed_many(core, celery_app, tmp_path / "s", 6)
    schedules.set_enabled(core, celery_app, "s-002", False, actor="t")
    form = {"action": "disable", "names": ["s-001", "s-002"], "job": "reports.sales_summary"}

    response = post(client, "/schedules/", form)

    assert response.status_code == 302
    assert response.headers["Location"] == "/schedules/?job=reports.sales_summary"
    assert audit(core)[-2:] == [("t", "disable", "s-002"), ("user:admin", "disable", "s-001")]
    assert not entry_exists(core, celery_app, "s-001")
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "1 of 2 selected schedule(s) disabled." in page

    # A row's button submits the bulk form (token, filters, page) to the row's own URL.
    listed = client.get("/schedules/?q=s-00&page=1").get_data(as_text=True)
    assert 'formaction="/schedules/s-001/enable" name="back" value="index"' in listed
    one = post(client, "/schedules/s-001/enable", {"back": "index", "q": "s-00", "page": "1"})
    assert one.headers["Location"] == "/schedules/?q=s-00&page=1"
    post(client, "/schedules/", {"action": "enable", "names": ["s-001", "s-002"]})
    assert entry_exists(core, celery_app, "s-001") and entry_exists(core, celery_app, "s-002")
    assert audit(core)[-2:] == [
        ("user:admin", "enable", "s-001"),
        ("user:admin", "enable", "s-002"),
    ]


def test_a_bulk_change_without_csrf_or_with_a_bad_name_changes_nothing(
    client: FlaskClient, core: Core, celery_app: Celery, tmp_path: Path
) -> None:
    seed_many(core, celery_app, tmp_path / "s", 3)
    before = stored_state(core)

    no_token = client.post("/schedules/", data={"action": "disable", "names": ["s-001"]})
    assert no_token.status_code == 400
    assert "The CSRF token is missing." in no_token.get_data(as_text=True)
    bad = post(client, "/schedules/", {"action": "disable", "names": ["s-001", "nope"]})
    assert bad.status_code == 404
    assert "schedule &#39;nope&#39; not found" in bad.get_data(as_text=True)
    assert post(client, "/schedules/", {"action": "pause", "names": ["s-001"]}).status_code == 400
    assert stored_state(core) == before


def test_a_paused_schedule_says_why_on_its_page_until_enabled(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    add_schedule(core, celery_app, pause_after_failures=2)
    with core.transaction() as session:
        assert schedules.pause_schedule(session, "hourly", "paused after 2 failed runs")
        assert not schedules.pause_schedule(session, "hourly", "again")  # already disabled
    page = html.unescape(client.get("/schedules/hourly").get_data(as_text=True))
    assert 'id="paused">Paused: paused after 2 failed runs. <strong>Enable</strong> resumes' in page
    assert 'id="resume-catch-up">Enable and catch up</button>' in page
    with core.reading() as session:
        assert session.get(Schedule, "hourly").disabled_at is not None
    response = post(client, "/schedules/hourly/enable", {})
    assert response.status_code == 302
    assert 'id="paused"' not in client.get("/schedules/hourly").get_data(as_text=True)
    assert audit(core) == [("seed", "create", "hourly"), ("batch", "pause", "hourly"),
                           ("user:admin", "enable", "hourly")]  # fmt: skip
