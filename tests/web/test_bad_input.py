"""Bad input to the API and the admin pages is a 4xx that changes nothing, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update

from batch import users
from batch.core import Core
from batch.db import utcnow
from batch.models import ApiToken, AuditEntry, Run, Schedule, UserSession
from batch.users import TOUCH_INTERVAL
from batch.web.auth import SESSION_KEY
from tests.test_queries import SALES, SUMS, add_run
from tests.web.conftest import csrf_token, field_errors, stored_state
from tests.web.test_api import HOURLY, count
from tests.web.test_schedules_pages import create

TOO_LONG = "...: a name has at most 64 characters"
ZONES = [
    ("America", "unknown timezone 'America'"),
    ("Europe", "unknown timezone 'Europe'"),
    ("Etc", "unknown timezone 'Etc'"),
    ("x" * 256, f"unknown timezone '{'x' * 32}'{TOO_LONG}"),
]
UNTIL_RANGE = "must be between 0001-01-02T01:00:00+00:00 and 9999-12-30T00:00:00+00:00"
TOO_DEEP = {"error": "the request body is not valid JSON: it is nested deeper than 32 levels"}


@pytest.fixture(autouse=True)
def _no_redbeat_entries(core: Core) -> None:
    for key in core.redis.scan_iter(match="batch:redbeat:*"):
        core.redis.delete(key)


def nested(depth: int, inner: str = "1") -> str:
    """JSON arrays ``depth`` deep around ``inner``."""
    return "[" * depth + inner + "]" * depth


# --- Timezones -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("zone", "message"), ZONES)
def test_an_unknown_timezone_is_a_400_from_the_api_and_changes_nothing(
    api: FlaskClient, core: Core, celery_app: Celery, zone: str, message: str
) -> None:
    assert api.post("/api/schedules", json=HOURLY).status_code == 201
    before = stored_state(core)
    expected = {"error": f"invalid schedule: timezone: {message}", "errors": {"timezone": message}}
    created = api.post("/api/schedules", json={**HOURLY, "name": "other", "timezone": zone})
    assert (created.status_code, created.json) == (400, expected)
    replaced = api.put("/api/schedules/hourly", json={**HOURLY, "timezone": zone})
    assert (replaced.status_code, replaced.json) == (400, expected)
    assert stored_state(core) == before


@pytest.mark.parametrize(("zone", "message"), ZONES)
def test_an_unknown_timezone_is_a_form_error(
    client: FlaskClient, core: Core, zone: str, message: str
) -> None:
    response = create(client, timezone=zone)
    assert response.status_code == 400
    assert field_errors(response.get_data(as_text=True)) == {"timezone": message}
    assert (count(core, Schedule), count(core, AuditEntry)) == (0, 0)


def test_the_preview_answers_each_zone_as_it_is_typed(client: FlaskClient) -> None:
    for typed in ("E", "Eu", "Europe", "Europe/", "Europe/B", "Europe/Berli", "x" * 300):
        response = client.get(f"/schedules/preview?cron=5+*+*+*+*&timezone={typed}")
        message = f"unknown timezone {typed!r}" if len(typed) < 64 else ZONES[-1][1]
        assert (response.status_code, response.json) == (
            400,
            {"errors": {"timezone": message}},
        ), typed
    response = client.get("/schedules/preview?cron=5+*+*+*+*&timezone=Europe/Berlin")
    assert response.status_code == 200 and len(response.json["times"]) == 5


# --- Params that could never run -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("job", "params", "field", "message"),
    [
        (SALES, {"until": "0001-01-01T00:30:00Z"}, "until", UNTIL_RANGE),
        (
            SALES,
            {"since": "9999-12-31T23:00:00Z"},
            "since",
            "must be between 0001-01-02T00:00:00+00:00 and 9999-12-29T23:00:00+00:00",
        ),
        (
            "cleanups.purge_runs",
            {"older_than_days": 1_000_000},
            "older_than_days",
            "must be at most 36500",
        ),
    ],
)
def test_params_that_could_never_run_are_a_400_naming_the_field(
    api: FlaskClient,
    core: Core,
    celery_app: Celery,
    job: str,
    params: dict[str, Any],
    field: str,
    message: str,
) -> None:
    before = stored_state(core)
    response = api.post(f"/api/jobs/{job}/runs", json={"params": params})
    assert (response.status_code, response.json) == (
        400,
        {
            "error": f"invalid params for {job}: {field}: {message}",
            "errors": {f"params.{field}": message},
        },
    )
    schedule = {**HOURLY, "job": job, "params": params}
    response = api.post("/api/schedules", json=schedule)
    assert (response.status_code, response.json["errors"]) == (
        400,
        {f"params.{field}": message},
    )
    assert stored_state(core) == before


# --- JSON bodies ---------------------------------------------------------------------------------

JSON_ENDPOINTS = [
    ("POST", f"/api/jobs/{SUMS}/runs"),
    ("POST", "/api/schedules"),
    ("PUT", "/api/schedules/hourly"),
]


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
@pytest.mark.parametrize(
    "body",
    [
        nested(1000),  # the parser itself overflowed: RecursionError
        nested(100_000),
        '{"params": ' + nested(1000) + "}",
        '{"params": {"n": ' + nested(31) + "}}",  # 33 levels
        '{"params": {"n": ' + '{"a": ' * 5000 + "1" + "}" * 5000 + "}}",
    ],
    ids=["1000-deep", "100000-deep", "1000-deep-params", "33-deep", "5000-deep-objects"],
)
def test_a_json_body_nested_too_deep_is_a_400(
    api: FlaskClient, core: Core, celery_app: Celery, method: str, path: str, body: str
) -> None:
    assert api.post("/api/schedules", json=HOURLY).status_code == 201
    before = stored_state(core)
    response = api.open(path, method=method, data=body, content_type="application/json")
    assert (response.status_code, response.json) == (400, TOO_DEEP)
    assert stored_state(core) == before


def test_a_json_body_32_deep_is_read(api: FlaskClient, core: Core) -> None:
    body = '{"params": {"n": ' + nested(30) + "}}"
    response = api.post(f"/api/jobs/{SUMS}/runs", data=body, content_type="application/json")
    assert (response.status_code, response.json["errors"]) == (
        400,
        {"params.n": "must be a whole number"},
    )
    assert count(core, Run) == 0


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS)
@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("1e400", "the number 1e400 is too large"),
        ("-1E+999", "the number -1E+999 is too large"),
        ("NaN", "NaN is not JSON"),
        ("-Infinity", "-Infinity is not JSON"),
    ],
)
def test_a_number_json_cannot_store_is_a_400(
    api: FlaskClient, core: Core, method: str, path: str, number: str, message: str
) -> None:
    body = json.dumps({**HOURLY, "params": {"n": "X"}}).replace('"X"', number)
    if path.startswith("/api/jobs/"):
        body = '{"params": {"n": ' + number + "}}"
    response = api.open(path, method=method, data=body, content_type="application/json")
    assert (response.status_code, response.json) == (
        400,
        {"error": f"the request body is not valid JSON: {message}"},
    )
    assert (count(core, Run), count(core, Schedule)) == (0, 0)


# --- The runs list cursor ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "before",
    [
        "0001-01-01T00:00:00%2B01:00~x",
        "0001-01-01T00:00:00.5%2B00:00:01~x",
        "9999-12-31T23:59:59-01:00~x",
        "9999-12-31T23:00:00-23:59~x",
        "2026-03-01T12:00:00%2B00:00~r%001",
    ],
)
def test_a_cursor_outside_utc_dates_is_a_400_on_the_runs_list(
    client: FlaskClient, core: Core, before: str
) -> None:
    add_run(core, "r1")
    for query in (f"?before={before}", f"?before={before}&job={SALES}&status=failed"):
        response = client.get(f"/runs/{query}")
        assert response.status_code == 400, query
        assert "bad cursor" in response.get_data(as_text=True), query


def test_a_cursor_at_the_ends_of_time_lists_from_there(client: FlaskClient, core: Core) -> None:
    add_run(core, "r1")
    last = client.get("/runs/?before=9999-12-31T23:59:59.999999%2B00:00~x")
    first = client.get("/runs/?before=0001-01-01T00:00:00Z~x")
    assert (last.status_code, first.status_code) == (200, 200)
    assert 'data-run-id="r1"' in last.get_data(as_text=True)
    assert 'data-run-id="r1"' not in first.get_data(as_text=True)


def test_progress_of_an_id_with_a_nul_or_a_space_is_a_400(client: FlaskClient, core: Core) -> None:
    add_run(core, "r1", status="running")
    error = {"error": "bad run id: at most 36 printable ASCII characters"}
    for ids in ("r1,r%001", "r%201", "é", "r1," + "x" * 37):
        response = client.get(f"/runs/progress.json?ids={ids}")
        assert (response.status_code, response.json) == (400, error), ids
    response = client.get("/runs/progress.json?ids=r1,,no-such-run")
    assert response.json == {"runs": {"r1": {"status": "running", "done": 0, "total": None}}}


@pytest.mark.parametrize("run_id", ["a%00b", "%00", "x%20y", "%ED%A0%80"])
def test_a_run_id_no_run_can_have_is_a_404_everywhere(
    client: FlaskClient, api: FlaskClient, core: Core, run_id: str
) -> None:
    # PostgreSQL refuses a NUL in text outright: such ids never reach the database.
    add_run(core, "a-real-run", status="running")
    before = stored_state(core)
    assert api.get(f"/api/runs/{run_id}").status_code == 404
    assert api.post(f"/api/runs/{run_id}/cancel").status_code == 404
    assert client.get(f"/runs/{run_id}").status_code == 404
    data = {"csrf_token": csrf_token(client, "/runs/a-real-run")}
    assert client.post(f"/runs/{run_id}/cancel", data=data).status_code == 404
    assert stored_state(core) == before


def test_a_deep_json_param_in_the_schedule_form_is_kept_as_typed() -> None:
    # An array or object param is typed as JSON; too deep to read, it stays the text typed
    # and the job's schema refuses it at its field (it was a RecursionError, a 500).
    from batch.web.params_form import param_value

    deep = "[" * 5000 + "]" * 5000
    assert param_value("array", deep) == deep
    assert param_value("array", "[[1]]") == [[1]]


@pytest.mark.parametrize("name", ["%00", "a%00b", "%ED%A0%80", "x%0A"])
def test_a_schedule_name_no_schedule_can_have_is_a_404_everywhere(
    client: FlaskClient, api: FlaskClient, core: Core, name: str
) -> None:
    before = stored_state(core)
    assert api.get(f"/api/schedules/{name}").status_code == 404
    assert api.delete(f"/api/schedules/{name}").status_code == 404
    assert client.get(f"/schedules/{name}").status_code == 404
    assert client.get(f"/schedules/{name}/edit").status_code == 404
    data = {"csrf_token": csrf_token(client, "/schedules/new")}
    for action in ("enable", "disable", "delete", "run"):
        assert client.post(f"/schedules/{name}/{action}", data=data).status_code == 404
    assert stored_state(core) == before


# --- Tokens and session ids ----------------------------------------------------------------------


@pytest.mark.parametrize("junk", ["\ud800", "a\udfffb", "\x00", "\U0001f600"])
def test_a_token_or_session_id_of_any_text_signs_nobody_in(
    app: Flask, core: Core, admin: tuple[str, str], junk: str
) -> None:
    # A test client or a server other than gunicorn may hand over a header holding a lone
    # surrogate; the signed cookie may too. Hashing it was a UnicodeEncodeError, a 500.
    before = stored_state(core)
    client = app.test_client()
    response = client.get("/api/jobs", headers={"Authorization": f"Bearer {junk}"})
    assert response.status_code == 401
    with client.session_transaction() as session:
        session[SESSION_KEY] = junk
    assert client.get("/").status_code == 302
    assert stored_state(core) == before


@pytest.mark.parametrize(
    "junk",
    [
        {"_flashes": None},
        {"_flashes": "x"},
        {"_flashes": [["message"]]},
        {"_flashes": [("message", "\ud800")]},
        {"csrf_token": 5},
        {"csrf_token": "\u00e9"},
        {"session_id": ["x"]},
        {"other": 1},
    ],
)
def test_a_signed_cookie_holding_what_we_never_write_is_no_session(
    app: Flask, core: Core, admin: tuple[str, str], junk: dict[str, Any]
) -> None:
    # Only a holder of SECRET_KEY can sign such a cookie, but it was a 500 on every page
    # (the flashes in the template, the CSRF secret in Flask-WTF): now it is no session.
    client = app.test_client()
    token = csrf_token(client)
    with client.session_transaction() as session:
        session["session_id"] = users.start_session(core, admin[0])
        session.update(junk)
    before = stored_state(core)
    assert client.get("/login").status_code == 200
    assert client.get("/").status_code == 302
    assert client.post("/logout", data={"csrf_token": token}).status_code in (302, 400)
    assert client.post("/login", data={"name": "x", "csrf_token": token}).status_code == 400
    assert stored_state(core) == before


def test_a_refused_request_records_no_use_of_its_token_or_session(
    core: Core, client: FlaskClient, api: FlaskClient
) -> None:
    # A token's last use and a session's last request were written before the request was
    # answered: a refused one (a 400, a 404) changed the accounts tables.
    with core.transaction() as session:
        session.execute(update(UserSession).values(last_seen_at=utcnow() - 2 * TOUCH_INTERVAL))
    before = stored_state(core)
    assert api.post("/api/schedules", json={}).status_code == 400
    assert api.get("/api/schedules/nope").status_code == 404
    assert client.get("/schedules/nope").status_code == 404
    assert client.get("/runs/", query_string={"limit": "x"}).status_code == 400
    assert stored_state(core) == before
    assert api.get("/api/jobs").status_code == 200
    assert client.get("/").status_code == 200
    with core.reading() as session:
        assert session.get_one(ApiToken, "tests").last_used_at is not None
        seen = session.scalars(select(UserSession.last_seen_at)).all()
    assert len(seen) == 1 and seen[0] > utcnow() - TOUCH_INTERVAL


# --- Request headers -----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["x" * 64, "a..b", "." * 3])
@pytest.mark.parametrize("path", ["/", "/runs/", "/login", "/healthz", "/api/jobs", "/nope"])
def test_a_host_no_site_can_have_is_a_400(
    app: Flask, client: FlaskClient, api: FlaskClient, core: Core, host: str, path: str
) -> None:
    # Werkzeug cannot bind the URLs to such a Host; the sign-in redirect built one anyway
    # (url_for with no URL adapter, an AttributeError): a 500 on every page.
    before = stored_state(core)
    for each in (app.test_client(), client, api):
        assert each.get(path, headers={"Host": host}).status_code == 400
    token = csrf_token(client, "/access/")
    logout = client.post("/logout", data={"csrf_token": token}, headers={"Host": host})
    assert logout.status_code == 400
    assert client.get("/").status_code == 200  # still signed in
    assert stored_state(core) == before
