"""The JSON API: tokens, jobs, runs through a real worker, schedules written through to RedBeat."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select

from batch import schedules
from batch.core import Core
from batch.cron import CronSchedule, IntervalSchedule
from batch.entries import BatchEntry
from batch.models import AuditEntry, Run, Schedule
from tests.test_queries import T0, add_run
from tests.web.conftest import stored_state
from tests.web.test_runs_pages import add_triggered_runs

SUM = "tests.sum_squares"
HOURLY = {"name": "hourly", "job": "reports.sales_summary", "cron": "5 * * * *"}
HOURLY_STORED = {
    "name": "hourly",
    "job": "reports.sales_summary",
    "params": {},
    "cron": "5 * * * *",
    "timezone": "UTC",
    "interval_seconds": None,
    "enabled": True,
    "overlap": "allow",
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
    "description": "",
}
ENDPOINTS = [
    ("GET", "/api/jobs"),
    ("POST", f"/api/jobs/{SUM}/runs"),
    ("GET", "/api/runs"),
    ("GET", "/api/runs/some-run"),
    ("GET", "/api/schedules"),
    ("POST", "/api/schedules"),
    ("GET", "/api/schedules/hourly"),
    ("PUT", "/api/schedules/hourly"),
    ("DELETE", "/api/schedules/hourly"),
    ("POST", "/api/schedules/enable"),
    ("POST", "/api/schedules/disable"),
    ("POST", "/api/schedules/hourly/backfill"),
    ("GET", "/api/backfills/1"),
    ("POST", "/api/backfills/1/cancel"),
    ("GET", "/api/nope"),  # an unknown path or method is not revealed without a token
    ("DELETE", "/api/jobs"),
]


@pytest.fixture(autouse=True)
def _no_redbeat_entries(core: Core) -> None:
    for key in core.redis.scan_iter(match="batch:redbeat:*"):
        core.redis.delete(key)


def count(core: Core, model: type) -> int:
    with core.reading() as session:
        return session.scalar(select(func.count()).select_from(model))


def expected_sum(n: int) -> int:
    return sum(i * i for i in range(n))


def poll(api: FlaskClient, run_id: str, timeout: float = 30) -> dict[str, Any]:
    """GET the run until it has finished; returns its last JSON."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = api.get(f"/api/runs/{run_id}")
        assert response.status_code == 200
        if response.json["status"] in ("succeeded", "failed", "skipped"):
            return response.json
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


def redbeat_entry(celery_app: Celery, name: str) -> BatchEntry:
    return BatchEntry.from_key(BatchEntry.generate_key(celery_app, name), app=celery_app)


def redbeat_exists(core: Core, celery_app: Celery, name: str) -> bool:
    return core.redis.exists(BatchEntry.generate_key(celery_app, name)) == 1


# Authentication


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
@pytest.mark.parametrize("header", [None, "Bearer not-a-token", "Basic dGVzdHM6eA==", "Bearer "])
def test_every_endpoint_needs_a_valid_token(
    app: Flask, core: Core, api_token: str, method: str, path: str, header: str | None
) -> None:
    headers = {"Authorization": header} if header else {}
    body = {"params": {"n": 10}} if "runs" in path else HOURLY
    response = app.test_client().open(path, method=method, headers=headers, json=body)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert response.json == {"error": "authentication required: Authorization: Bearer <token>"}
    assert count(core, Run) == count(core, Schedule) == count(core, AuditEntry) == 0


# Jobs and runs


def test_jobs_lists_exactly_the_registered_jobs(api: FlaskClient, core: Core) -> None:
    response = api.get("/api/jobs")
    assert response.status_code == 200
    jobs = response.json["jobs"]
    assert [job["name"] for job in jobs] == [
        "cleanups.purge_runs",
        "reports.sales_summary",
        SUM,
        "tests.sum_squares_reports",
    ]
    assert response.json == {"jobs": [job.describe() for job in core.jobs]}
    sum_squares = jobs[2]
    assert sum_squares["queue"] == "default"
    assert sum_squares["params"]["properties"]["n"] == {
        "default": 1000,
        "minimum": 0,
        "title": "N",
        "type": "integer",
    }


def test_a_run_is_queued_then_polled_to_its_exact_result(
    api: FlaskClient, core: Core, worker: Path
) -> None:
    response = api.post(f"/api/jobs/{SUM}/runs", json={"params": {"n": 3000}})
    assert response.status_code == 202
    run_id = response.json["run_id"]
    assert response.json == {"run_id": run_id, "status": "queued", "url": f"/api/runs/{run_id}"}
    assert response.headers["Location"] == f"/api/runs/{run_id}"
    summary = poll(api, run_id)
    assert summary["status"] == "succeeded", summary["error"]
    assert summary["result"] == {"sum": expected_sum(3000)} == {"sum": 8995500500}
    assert (summary["chunks_done"], summary["chunks_total"]) == (8, 8)
    assert summary["trigger"] == "api:tests"
    assert summary["params"] == {"n": 3000, "fail_chunk": None, "fail_while_file": None}
    assert summary["error"] is None


@pytest.mark.parametrize("body", [None, {}, {"params": {}}])
def test_a_run_without_params_uses_the_defaults(
    api: FlaskClient, worker: Path, body: dict | None
) -> None:
    response = api.post(f"/api/jobs/{SUM}/runs", json=body)
    assert response.status_code == 202
    summary = poll(api, response.json["run_id"])
    assert summary["params"] == {"n": 1000, "fail_chunk": None, "fail_while_file": None}
    assert summary["result"] == {"sum": expected_sum(1000)}


def test_a_failing_run_shows_its_error(api: FlaskClient, worker: Path) -> None:
    response = api.post(f"/api/jobs/{SUM}/runs", json={"params": {"n": 800, "fail_chunk": 500}})
    summary = poll(api, response.json["run_id"])
    assert (summary["status"], summary["result"]) == ("failed", None)
    assert "chunk 5: ValueError: chunk with item 500 failed on purpose" in summary["error"]


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        (
            {"n": "many"},
            "params.n",
            "must be a whole number, not 'many'",
        ),
        ({"n": -1}, "params.n", "must be at least 0"),
        ({"n": 10, "bogus": 1}, "params.bogus", "not a known field"),
    ],
)
def test_bad_params_are_a_400_and_no_run_is_written(
    api: FlaskClient, core: Core, params: dict, field: str, message: str
) -> None:
    response = api.post(f"/api/jobs/{SUM}/runs", json={"params": params})
    assert response.status_code == 400
    assert response.json["errors"] == {field: message}
    assert response.json["error"] == f"invalid params for {SUM}: {field[7:]}: {message}"
    assert count(core, Run) == 0


def test_a_model_level_params_error_is_keyed_params(api: FlaskClient, core: Core) -> None:
    window = {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}
    response = api.post("/api/jobs/reports.sales_summary/runs", json={"params": window})
    assert response.status_code == 400
    assert response.json["errors"] == {"params": "since must be before until"}
    assert count(core, Run) == 0


def test_unknown_job_and_unknown_run_are_404(api: FlaskClient, core: Core) -> None:
    response = api.post("/api/jobs/reports.nope/runs", json={"params": {}})
    assert (response.status_code, response.json) == (404, {"error": "unknown job 'reports.nope'"})
    response = api.get("/api/runs/no-such-run")
    assert (response.status_code, response.json) == (404, {"error": "run no-such-run not found"})
    assert count(core, Run) == 0


def test_a_run_is_found_by_a_unique_id_prefix(api: FlaskClient, core: Core) -> None:
    full = "7e57a11d-0000-4000-8000-000000000001"
    add_run(core, full)
    add_run(core, "7e57b22d-0000-4000-8000-000000000002")
    response = api.get("/api/runs/7e57A11D")
    assert (response.status_code, response.json["run_id"]) == (200, full)
    response = api.get("/api/runs/7e57")
    assert (response.status_code, response.json) == (
        404, {"error": "run id '7e57' matches several runs: give more of the id"}
    )  # fmt: skip


# Malformed requests


@pytest.mark.parametrize(
    ("method", "path", "data", "error"),
    [
        ("POST", f"/api/jobs/{SUM}/runs", "{", "the request body is not valid JSON: "),
        ("POST", f"/api/jobs/{SUM}/runs", "n=5", "the request body is not valid JSON: "),
        ("POST", f"/api/jobs/{SUM}/runs", b"\xff\xfe{", "the request body is not valid JSON: "),
        ("POST", f"/api/jobs/{SUM}/runs", '{"params": {"n": NaN}}', "the request body is not"),
        ("POST", f"/api/jobs/{SUM}/runs", "[1, 2]", "the request body must be a JSON object"),
        ("POST", f"/api/jobs/{SUM}/runs", '"n"', "the request body must be a JSON object"),
        ("POST", f"/api/jobs/{SUM}/runs", "null", "the request body must be a JSON object"),
        ("POST", f"/api/jobs/{SUM}/runs", '{"params": [1]}', "params must be a JSON object"),
        ("POST", f"/api/jobs/{SUM}/runs", '{"params": null}', "params must be a JSON object"),
        ("POST", f"/api/jobs/{SUM}/runs", '{"params": "n=5"}', "params must be a JSON object"),
        (
            "POST",
            f"/api/jobs/{SUM}/runs",
            '{"n": 5}',
            "unknown field(s) in the request body: n",
        ),
        ("POST", "/api/schedules", "", "the request body must be a JSON object"),
        ("POST", "/api/schedules", "{nope", "the request body is not valid JSON: "),
        ("POST", "/api/schedules", "[]", "the request body must be a JSON object"),
        ("PUT", "/api/schedules/hourly", "", "the request body must be a JSON object"),
        ("PUT", "/api/schedules/hourly", "42", "the request body must be a JSON object"),
    ],
)
@pytest.mark.parametrize("content_type", ["application/json", "text/plain"])
def test_malformed_bodies_are_a_json_400(
    api: FlaskClient,
    core: Core,
    method: str,
    path: str,
    data: str | bytes,
    error: str,
    content_type: str,
) -> None:
    response = api.open(path, method=method, data=data, content_type=content_type)
    assert response.status_code == 400
    assert response.mimetype == "application/json"
    assert list(response.json) == ["error"]
    assert response.json["error"].startswith(error)
    assert count(core, Run) == count(core, Schedule) == count(core, AuditEntry) == 0


def test_unknown_paths_and_methods_answer_in_json(api: FlaskClient) -> None:
    response = api.get("/api/nope")
    assert (response.status_code, response.mimetype) == (404, "application/json")
    assert response.json["error"].startswith("The requested URL was not found on the server.")
    response = api.delete("/api/jobs")
    assert (response.status_code, response.mimetype) == (405, "application/json")
    assert response.json == {"error": "The method is not allowed for the requested URL."}
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS"}
    response = api.patch("/api/schedules/hourly", json={})
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(", ")) == {"GET", "HEAD", "OPTIONS", "PUT", "DELETE"}


# Schedules


def test_create_stores_audits_and_writes_through(
    api: FlaskClient, core: Core, celery_app: Celery
) -> None:
    response = api.post("/api/schedules", json=HOURLY)
    assert response.status_code == 201
    assert response.headers["Location"] == "/api/schedules/hourly"
    assert response.json == HOURLY_STORED
    with core.reading() as session:
        assert schedules.schedule_as_dict(schedules.get_schedule(session, "hourly")) == (
            HOURLY_STORED
        )
        audit = session.execute(
            select(AuditEntry.actor, AuditEntry.action, AuditEntry.object_name)
        ).all()
    assert audit == [("api:tests", "create", "hourly")]
    assert redbeat_exists(core, celery_app, "hourly")
    assert redbeat_entry(celery_app, "hourly").schedule == CronSchedule("5 * * * *", "UTC")

    listed = {"schedules": [HOURLY_STORED], "total": 1, "next": None}
    assert api.get("/api/schedules").json == listed
    assert api.get("/api/schedules/hourly").json == HOURLY_STORED


def test_create_keeps_only_given_params_coerced(api: FlaskClient) -> None:
    body = {"name": "sums", "job": SUM, "params": {"n": "50"}, "interval_seconds": 30}
    response = api.post("/api/schedules", json=body)
    assert response.status_code == 201
    assert response.json["params"] == {"n": 50}
    assert (response.json["cron"], response.json["interval_seconds"]) == (None, 30)


def test_duplicate_create_is_a_409(api: FlaskClient, core: Core) -> None:
    assert api.post("/api/schedules", json=HOURLY).status_code == 201
    response = api.post("/api/schedules", json={**HOURLY, "cron": "9 * * * *"})
    assert (response.status_code, response.json) == (
        409,
        {"error": "schedule 'hourly' already exists"},
    )
    assert api.get("/api/schedules/hourly").json["cron"] == "5 * * * *"
    assert count(core, AuditEntry) == 1


@pytest.mark.parametrize(
    ("changes", "field", "message"),
    [
        ({"cron": "61 * * * *"}, "cron", "bad cron line '61 * * * *': "),
        ({"cron": "* * *"}, "cron", "expected 5 fields, got '* * *'"),
        ({"timezone": "Moon/Base"}, "timezone", "unknown timezone 'Moon/Base'"),
        ({"job": "reports.nope"}, "job", "unknown job 'reports.nope'"),
        (
            {"params": {"since": "yesterday"}},
            "params.since",
            "must be a date and time with its zone",
        ),
        ({"job": SUM, "params": {"n": "many"}}, "params.n", "must be a whole number, not 'many'"),
        ({"params": [1]}, "params", "must be a table of names and values"),
        ({"cron": None, "interval_seconds": 0}, "interval_seconds", "must be at least 1 second"),
        ({"name": "bad name!"}, "name", "use 1 to 200 letters, digits"),
        ({"name": None}, "name", "must be text"),
        (
            {"overlap": "sometimes"},
            "overlap",
            "must be 'allow', 'skip', 'buffer_one' or 'cancel_other', not 'sometimes'",
        ),
        ({"colour": "red"}, "colour", "not a known field"),
    ],
)
def test_bad_schedule_is_a_400_and_nothing_is_stored(
    api: FlaskClient,
    core: Core,
    celery_app: Celery,
    changes: dict,
    field: str,
    message: str,
) -> None:
    response = api.post("/api/schedules", json={**HOURLY, **changes})
    assert response.status_code == 400
    assert list(response.json["errors"]) == [field]
    assert response.json["errors"][field].startswith(message)
    assert response.json["error"].startswith("invalid schedule: ")
    assert count(core, Schedule) == count(core, AuditEntry) == 0
    assert list(core.redis.scan_iter(match="batch:redbeat:*")) == []


def test_missing_name_and_job_are_field_errors(api: FlaskClient, core: Core) -> None:
    response = api.post("/api/schedules", json={"cron": "5 * * * *"})
    assert response.status_code == 400
    assert response.json["errors"] == {"name": "required", "job": "required"}
    assert count(core, Schedule) == 0


def test_put_replaces_the_row_and_the_redbeat_entry(
    api: FlaskClient, core: Core, celery_app: Celery
) -> None:
    assert api.post("/api/schedules", json=HOURLY).status_code == 201
    replacement = {
        "job": SUM,
        "params": {"n": 20},
        "interval_seconds": 90,
        "overlap": "skip",
        "description": "every 90 s",
    }
    response = api.put("/api/schedules/hourly", json=replacement)
    expected = {
        **HOURLY_STORED,
        **replacement,
        "cron": None,
    }
    assert (response.status_code, response.json) == (200, expected)
    with core.reading() as session:
        assert schedules.schedule_as_dict(schedules.get_schedule(session, "hourly")) == expected
        audit = session.execute(
            select(AuditEntry.actor, AuditEntry.action).order_by(AuditEntry.id)
        ).all()
    assert audit == [("api:tests", "create"), ("api:tests", "update")]
    entry = redbeat_entry(celery_app, "hourly")
    assert entry.schedule == IntervalSchedule(90)
    assert (entry.task, entry.kwargs["job"], entry.kwargs["params"]) == (
        "batch.start_run",
        SUM,
        {"n": 20},
    )

    # The same name in the body is allowed; leaving "enabled" out would re-enable it.
    response = api.put(
        "/api/schedules/hourly", json={**replacement, "name": "hourly", "enabled": False}
    )
    assert (response.status_code, response.json["enabled"]) == (200, False)
    assert not redbeat_exists(core, celery_app, "hourly")
    assert count(core, AuditEntry) == 3


def test_put_errors(api: FlaskClient, core: Core, celery_app: Celery) -> None:
    response = api.put("/api/schedules/hourly", json=HOURLY)
    assert (response.status_code, response.json) == (404, {"error": "schedule 'hourly' not found"})
    assert count(core, Schedule) == 0
    assert not redbeat_exists(core, celery_app, "hourly")

    assert api.post("/api/schedules", json=HOURLY).status_code == 201
    response = api.put("/api/schedules/hourly", json={**HOURLY, "name": "daily"})
    assert response.status_code == 400
    assert response.json["errors"] == {"name": "must be 'hourly' (the name in the URL) or left out"}
    response = api.put("/api/schedules/hourly", json={**HOURLY, "timezone": "Mars/Olympus"})
    assert response.status_code == 400
    assert response.json["errors"] == {"timezone": "unknown timezone 'Mars/Olympus'"}
    assert api.get("/api/schedules/hourly").json == HOURLY_STORED
    assert api.get("/api/schedules/daily").status_code == 404
    assert count(core, AuditEntry) == 1
    assert redbeat_entry(celery_app, "hourly").schedule == CronSchedule("5 * * * *", "UTC")


def test_delete_then_404(api: FlaskClient, core: Core, celery_app: Celery) -> None:
    assert api.post("/api/schedules", json=HOURLY).status_code == 201
    response = api.delete("/api/schedules/hourly")
    assert (response.status_code, response.data) == (204, b"")
    assert count(core, Schedule) == 0
    assert not redbeat_exists(core, celery_app, "hourly")
    with core.reading() as session:
        audit = session.execute(
            select(AuditEntry.actor, AuditEntry.action).order_by(AuditEntry.id)
        ).all()
    assert audit == [("api:tests", "create"), ("api:tests", "delete")]
    for response in (api.get("/api/schedules/hourly"), api.delete("/api/schedules/hourly")):
        assert (response.status_code, response.json) == (
            404,
            {"error": "schedule 'hourly' not found"},
        )
    assert api.get("/api/schedules").json == {"schedules": [], "total": 0, "next": None}


def test_a_run_the_broker_cannot_take_is_a_503_and_a_failed_run(core: Core, api_token: str) -> None:
    from dataclasses import replace

    from batch.celery_app import close_celery
    from batch.web import create_app

    app = create_app(replace(core.settings, broker_url="redis://127.0.0.1:1/0"))
    client = app.test_client()
    response = client.post(
        "/api/jobs/tests.sum_squares/runs",
        json={"params": {"n": 3}},
        headers={"Authorization": f"Bearer {api_token}"},
    )
    close_celery(app.extensions["batch_celery"])
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json["error"].startswith("could not queue run ")
    with core.reading() as session:
        run = session.scalars(select(Run)).one()
    assert run.status == "failed" and run.error.startswith("could not queue: ")


def test_bulk_disable_and_enable_change_each_once_and_write_through(
    api: FlaskClient, core: Core, celery_app: Celery
) -> None:
    for name in ("a", "b", "c"):
        assert api.post("/api/schedules", json={**HOURLY, "name": name}).status_code == 201
    api.post("/api/schedules/disable", json={"names": ["b"]})

    response = api.post("/api/schedules/disable", json={"names": ["a", "b"]})

    assert response.status_code == 200
    assert response.json == {
        "schedules": [
            {**HOURLY_STORED, "name": "a", "enabled": False},
            {**HOURLY_STORED, "name": "b", "enabled": False},
        ],
        "changed": ["a"],
    }
    with core.reading() as session:
        audit = session.execute(
            select(AuditEntry.action, AuditEntry.object_name).order_by(AuditEntry.id)
        ).all()
    assert audit[3:] == [("disable", "b"), ("disable", "a")]
    assert [redbeat_exists(core, celery_app, n) for n in ("a", "b", "c")] == [False, False, True]

    response = api.post("/api/schedules/enable", json={"names": ["a", "b", "c"]})
    assert (response.status_code, response.json["changed"]) == (200, ["a", "b"])
    assert all(redbeat_exists(core, celery_app, n) for n in ("a", "b", "c"))


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"names": ["a", "nope"]}, 404, "schedule 'nope' not found"),
        ({"names": []}, 400, "names must be a list of 1 to 10000 schedule names"),
        ({"names": "a"}, 400, "names must be a list of 1 to 10000 schedule names"),
        ({"names": ["a", 3]}, 400, "names must be a list of 1 to 10000 schedule names"),
        ({}, 400, "names must be a list of 1 to 10000 schedule names"),
        ({"names": ["a"], "enabled": True}, 400, "unknown field(s) in the request body: enabled"),
    ],
)
def test_a_bad_bulk_request_names_the_problem_and_changes_nothing(
    api: FlaskClient, core: Core, body: dict[str, Any], status: int, error: str
) -> None:
    assert api.post("/api/schedules", json={**HOURLY, "name": "a"}).status_code == 201
    before = stored_state(core)

    response = api.post("/api/schedules/disable", json=body)

    assert (response.status_code, response.json) == (status, {"error": error})
    assert stored_state(core) == before


def test_the_schedules_list_pages_by_name_with_the_admins_filters(
    core: Core, celery_app: Celery, api: FlaskClient
) -> None:
    for index in range(7):
        body = {**HOURLY, "name": f"s-{index}", "enabled": index != 3}
        if index % 2:
            body.update(job="cleanups.purge_runs", params={}, cron="0 3 * * *")
        assert api.post("/api/schedules", json=body).status_code == 201
    with core.reading() as session:  # what the pages must add up to, read from SQL
        odd_enabled = session.scalars(
            select(Schedule.name)
            .where(Schedule.job == "cleanups.purge_runs", Schedule.enabled.is_(True))
            .order_by(Schedule.name)
        ).all()
    assert odd_enabled == ["s-1", "s-5"]

    url, names, totals = "/api/schedules?limit=3", [], set()
    while url:
        page = api.get(url).json
        names += [schedule["name"] for schedule in page["schedules"]]
        totals.add(page["total"])
        url = page["next"]
    assert (names, totals) == ([f"s-{index}" for index in range(7)], {7})

    first = api.get("/api/schedules?job=cleanups.purge_runs&enabled=yes&limit=1").json
    assert ([s["name"] for s in first["schedules"]], first["total"]) == (["s-1"], 2)
    assert first["next"] == "/api/schedules?job=cleanups.purge_runs&enabled=yes&limit=1&after=s-1"
    second = api.get(first["next"]).json
    assert ([s["name"] for s in second["schedules"]], second["next"]) == (odd_enabled[1:], None)
    searched = api.get("/api/schedules?q=S-4").json  # a part of the name, in any case
    assert [s["name"] for s in searched["schedules"]] == ["s-4"]


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("limit=0", "bad limit 0: expected 1 to 1000"),
        ("limit=1001", "bad limit 1001: expected 1 to 1000"),
        ("limit=ten", "bad limit 'ten': expected a whole number"),
        ("after=%00", "bad after '\\x00': expected a schedule name"),
        ("enabled=maybe", "bad enabled 'maybe': expected yes or no"),
        ("queue=nope", "unknown queue 'nope'"),
    ],
)
def test_a_bad_schedules_list_query_is_a_400_naming_it(
    api: FlaskClient, query: str, error: str
) -> None:
    response = api.get(f"/api/schedules?{query}")
    assert (response.status_code, response.json["error"]) == (400, error)
    # A bad filter is also named by its argument; limit and after are not filters.
    argument = query.split("=")[0]
    expected = {argument: error} if argument in ("enabled", "queue") else None
    assert response.json.get("errors") == expected


def test_the_runs_list_pages_newest_first_with_the_admins_filters(
    api: FlaskClient, core: Core
) -> None:
    add_triggered_runs(core)
    with core.reading() as session:  # what the pages must add up to, read from SQL
        expected = session.scalars(
            select(Run.id)
            .where(Run.schedule_name == "hourly", Run.created_at >= T0)
            .order_by(Run.created_at.desc())
        ).all()
    assert expected == ["t3", "t0"]

    url, seen = "/api/runs?schedule=hourly&since=2026-03-01&limit=1", []
    while url:
        page = api.get(url).json
        seen += [run["run_id"] for run in page["runs"]]
        url = page["next"]
    assert seen == expected

    (run,) = api.get("/api/runs?trigger=user").json["runs"]
    assert run == {
        "run_id": "t1",
        "job": "tests.sum_squares",
        "status": "failed",
        "trigger": "user:ann",
        "schedule": None,
        "scheduled_for": None,
        "chunks_done": None,
        "chunks_total": None,
        "created_at": "2026-03-01T12:01:00+00:00",
        "started_at": "2026-03-01T12:01:00+00:00",
        "finished_at": "2026-03-01T12:01:03+00:00",
        "duration_seconds": 3.0,
    }
    first = api.get("/api/runs?status=succeeded&limit=2").json
    assert [r["run_id"] for r in first["runs"]] == ["t4", "t2"]
    assert first["next"].startswith("/api/runs?status=succeeded&limit=2&before=")


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("limit=0", "bad limit 0: expected 1 to 200"),
        (
            "status=done",
            "unknown status 'done': expected one of queued, running, succeeded,"
            " failed, skipped, cancelled",
        ),  # fmt: skip
        (
            "trigger=robot",
            "unknown trigger 'robot': expected one of schedule, user, api, cli, backfill, other",
        ),  # fmt: skip
        (
            "since=%00",
            "bad since '\\x00': expected a date (2026-12-01) or a date and time (2026-12-01T06:00)",
        ),  # fmt: skip
        ("q=12", "bad run id '12': expected at least 4 of its first characters (0-9, a-f and -)"),
        ("before=x", "bad cursor 'x': expected <ISO timestamp>~<run id>"),
        ("job=no.job", "unknown job 'no.job'"),
    ],
)
def test_a_bad_runs_list_query_is_a_400_naming_it(api: FlaskClient, query: str, error: str) -> None:
    response = api.get(f"/api/runs?{query}")
    assert response.status_code == 400
    assert response.json["error"].startswith(error)


def test_every_bad_runs_list_filter_is_named_at_once(api: FlaskClient) -> None:
    response = api.get("/api/runs?status=done&since=soon&schedule=a%20b")
    assert response.status_code == 400
    assert response.json["errors"] == {
        "schedule": "bad schedule 'a b': not a schedule name",
        "status": "unknown status 'done': expected one of queued, running, succeeded, failed,"
        " skipped, cancelled, waiting",
        "since": "bad since 'soon': expected a date (2026-12-01) or a date and time"
        " (2026-12-01T06:00)",
    }
    # The message names them all, in the order of the filters.
    errors = response.json["errors"]
    assert response.json["error"] == "; ".join(
        errors[key] for key in ("schedule", "status", "since")
    )
