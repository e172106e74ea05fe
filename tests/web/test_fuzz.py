"""Property-based fuzzing of everything a user can send: the API, the admin forms, the schedule
preview, the list filters and ``batch schedules import``.

Two properties, whatever the input:
- no answer is a server error (5xx), and the CLI never prints a traceback;
- an input that is refused (4xx, or a CLI error) changes nothing: the SQL tables a request can
  write and every RedBeat key are the same before and after.

The inputs mix the shapes each endpoint expects with what breaks parsers and databases: wrong
types, huge and negative numbers, dates at the ends of the calendar, names that are folders of
the timezone database, lone surrogates, NUL characters, deep nesting. CI runs a fixed,
bounded set (``derandomize``); ``HYPOTHESIS_PROFILE=hunt`` searches at random for longer.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import hypothesis.strategies as st
import pytest
from celery import Celery
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from sqlalchemy import func, select

from batch import schedules, users
from batch.celery_app import close_celery
from batch.cli import main
from batch.constants import LOGIN_ATTEMPTS_KEY_PREFIX
from batch.core import Core
from batch.models import QUEUED, RUNNING, ApiToken, Backfill, Run, User
from batch.web.auth import SESSION_KEY
from tests.conftest import settings_env
from tests.web.conftest import STORED, csrf_token, stored_state

settings.register_profile(
    "ci",
    # Fixed and derandomized: the same 60 examples per surface on every run, about 2 minutes
    # for the whole file; HYPOTHESIS_PROFILE=hunt searches far wider.
    max_examples=60,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.register_profile(
    "hunt",
    max_examples=2000,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
#: A hunt runs each test for many minutes: the suite's per-test timeout is for CI's budget.
pytestmark = pytest.mark.timeout(3600 if settings().max_examples > 300 else 120)

JOBS = ["tests.sum_squares", "reports.sales_summary", "cleanups.purge_runs"]

# --- Inputs --------------------------------------------------------------------------------

#: Any text, lone surrogates and NUL characters included.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
tricky_text = st.sampled_from(
    ["", " ", "\x00", "\ud800", "a\nb", "../x", "%00", "Europe", "America", "Etc", "UTC",
     "Europe/Berlin", "0001-01-01T00:30:00Z", "9999-12-31T23:59:59Z", "0001-01-01T00:00:00+01:00",
     "1e309", "-1", "NaN", "x" * 300, "* * * * *", "0 * * * *", "*/0 * * * *", "61 * * * *"]
)  # fmt: skip
#: Characters no database stores, inside otherwise ordinary text.
poisoned_text = st.builds(
    lambda head, poison, tail: head + poison + tail,
    any_text,
    st.sampled_from(["\ud800", "\x00", "\x00\udfff"]),
    any_text,
)
text_values = st.one_of(tricky_text, poisoned_text, any_text)
numbers = st.one_of(
    st.integers(),
    st.sampled_from([0, -1, 1, 59, 2**31, 2**63, 10**6, 10**18, 10**400]),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, text_values)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(text_values, inner, max_size=3)
    ),
    max_leaves=8,
)
param_values = st.dictionaries(
    st.sampled_from(["n", "since", "until", "older_than_days", "fail_chunk", "x"]) | any_text,
    json_values,
    max_size=4,
)
schedule_bodies = st.fixed_dictionaries(
    {"job": st.sampled_from(JOBS) | text_values},
    optional={
        "name": st.sampled_from(["fuzz-a", "fuzz-b"]) | text_values | numbers,
        "params": param_values | json_values,
        "cron": st.sampled_from(["0 * * * *", "*/5 * * * *", "0 0 29 2 *"]) | text_values,
        "timezone": text_values,
        "interval_seconds": numbers | text_values,
        "enabled": json_values,
        "overlap": st.sampled_from(["allow", "skip"]) | text_values,
        "queue": st.sampled_from(["default", "reports"]) | text_values,
        "priority": numbers | text_values,
        "deadline_seconds": numbers | text_values,
        "description": text_values,
        "extra": json_values,
    },
)
query_values = st.one_of(text_values, numbers.map(str))

#: Valid schedules, each to be spoiled in one or two fields: most inputs that reach the
#: database get there with everything right but one thing.
VALID_SCHEDULES = [
    {"name": "fuzz-a", "job": "tests.sum_squares", "params": {"n": 5}, "cron": "0 * * * *"},
    {"name": "fuzz-b", "job": "reports.sales_summary", "interval_seconds": 3600,
     "timezone": "Europe/Berlin", "description": "hourly"},
    {"name": "fuzz-a", "job": "cleanups.purge_runs", "params": {"older_than_days": 30},
     "cron": "30 3 * * *", "overlap": "skip", "queue": "cleanups", "priority": 5,
     "deadline_seconds": 600},
]  # fmt: skip
#: What spoils a field: half the time text holding what no database stores.
hostile = st.one_of(poisoned_text, poisoned_text, tricky_text, json_values)
SCHEDULE_FIELDS = sorted({key for body in VALID_SCHEDULES for key in body} | {"enabled"})
spoiled_schedules = st.builds(
    lambda base, key, value: {**base, key: value},
    st.sampled_from(VALID_SCHEDULES),
    st.sampled_from(SCHEDULE_FIELDS),
    hostile,
)
VALID_PARAMS = {
    "tests.sum_squares": {"n": 5},
    "reports.sales_summary": {"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T01:00:00Z"},
    "cleanups.purge_runs": {"older_than_days": 30},
}
spoiled_submits = st.sampled_from(sorted(VALID_PARAMS)).flatmap(
    lambda job: st.tuples(
        st.just(job),
        st.dictionaries(st.sampled_from([*VALID_PARAMS[job], "x"]), hostile, max_size=2).map(
            lambda change: {"params": {**VALID_PARAMS[job], **change}}
        ),
    )
)


# --- What must not change --------------------------------------------------------------------


def settle(core: Core, timeout: float = 60) -> None:
    """Wait until the worker has ended every run an accepted request started."""
    deadline = time.monotonic() + timeout
    while True:
        with core.reading() as session:
            going = session.scalar(
                select(func.count()).select_from(Run).where(Run.status.in_((QUEUED, RUNNING)))
            )
        if not going:
            return
        assert time.monotonic() < deadline, f"{going} runs still going after {timeout}s"
        time.sleep(0.05)


def check(core: Core, before: tuple[Any, ...], status: int, what: str) -> None:
    event(f"answered {status}")  # --hypothesis-show-statistics: what the inputs reached
    assert status < 500, f"{what}: {status}"
    if status >= 400:
        after = stored_state(core)
        assert after == before, f"{what}: refused with {status}, changed {changed(before, after)}"


def changed(before: tuple[Any, ...], after: tuple[Any, ...]) -> list[str]:
    """What differs between two stored states: table names, and "RedBeat"."""
    names = [model.__tablename__ for model in STORED]
    tables = [name for name, old, new in zip(names, before[0], after[0], strict=True) if old != new]
    return tables + (["RedBeat"] if before[1] != after[1] else [])


def body_of(value: Any) -> str:
    # As a client would send it: json.dumps writes a lone surrogate as the escape \ud800.
    return json.dumps(value)


def encoded(fields: dict[str, str]) -> str:
    """A query string or form body as a client sends it: UTF-8, percent-encoded; a lone
    surrogate goes as the bytes Python would write for it."""
    return urlencode(
        [(key.encode("utf-8", "surrogatepass"), value.encode("utf-8", "surrogatepass"))
         for key, value in fields.items()]
    )  # fmt: skip


def segment(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


# --- The API ---------------------------------------------------------------------------------


@settings(max_examples=max(settings().max_examples, 200))
@given(
    body=st.one_of(spoiled_schedules, spoiled_schedules, spoiled_schedules, schedule_bodies),
    method=st.sampled_from(["POST", "PUT"]),
)
def test_api_schedule_writes(
    core: Core, worker: Path, api: FlaskClient, client: FlaskClient, body: Any, method: str
) -> None:
    settle(core)
    before = stored_state(core)
    name = body.get("name") if isinstance(body, dict) else None
    path = "/api/schedules" if method == "POST" else f"/api/schedules/{segment(str(name))}"
    response = api.open(path, method=method, data=body_of(body), content_type="application/json")
    check(core, before, response.status_code, f"{method} {path} {body!r}")
    if response.status_code < 400:
        shown = segment(response.json["name"])
        pages = ["/", "/schedules/", f"/schedules/{shown}", f"/schedules/{shown}/edit"]
        shows(client, api, [*pages, "/api/schedules", f"/api/schedules/{shown}"], body)


def shows(client: FlaskClient, api: FlaskClient, paths: list[str], what: Any) -> None:
    """Every page and API answer that shows what an accepted request stored answers 200."""
    for path in paths:
        response = (api if path.startswith("/api/") else client).get(path)
        response.close()
        assert response.status_code == 200, f"GET {path} after {what!r}: {response.status_code}"


@given(
    job=st.sampled_from(JOBS) | text_values,
    body=json_values,
    params=param_values,
    spoiled=spoiled_submits,
)
def test_api_submit(
    core: Core,
    worker: Path,
    api: FlaskClient,
    client: FlaskClient,
    job: str,
    body: Any,
    params: Any,
    spoiled: Any,
) -> None:
    settle(core)
    for name, payload in (spoiled, (job, body), (job, {"params": params})):
        if runs_for_ages(name, payload):
            continue
        before = stored_state(core)
        response = api.post(
            f"/api/jobs/{segment(name)}/runs",
            data=body_of(payload),
            content_type="application/json",
        )
        if response.status_code < 400:
            # Accepted: it may write; what proves more is that its run shows once ended.
            run_id = response.json["run_id"]
            settle(core)
            pages = ["/", "/runs/", f"/runs/{run_id}", "/results/", f"/results/{segment(name)}"]
            shows(client, api, [*pages, f"/api/runs/{run_id}"], payload)
            return
        check(core, before, response.status_code, f"submit {name!r} {payload!r}")


def runs_for_ages(job: str, body: Any) -> bool:
    """Whether ``body`` submits a sum of squares over more than a million numbers: valid (this
    test job sets no bound), but a worker would add for hours and every later example would
    wait for it."""
    params = body.get("params") if isinstance(body, dict) else None
    if job != "tests.sum_squares" or not isinstance(params, dict):
        return False
    try:
        return float(params.get("n", 0)) > 1e6
    except (TypeError, ValueError, OverflowError):
        return False


@given(raw=st.binary(max_size=200) | any_text.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_api_bodies_that_are_not_json(
    core: Core, worker: Path, api: FlaskClient, raw: bytes
) -> None:
    settle(core)
    for path in ("/api/schedules", "/api/jobs/tests.sum_squares/runs"):
        before = stored_state(core)
        response = api.post(path, data=raw, content_type="application/json")
        check(core, before, response.status_code, f"POST {path} {raw!r}")


@given(run_id=text_values, name=text_values)
def test_api_reads_and_cancels(
    core: Core, worker: Path, api: FlaskClient, run_id: str, name: str
) -> None:
    settle(core)
    run_id, name = segment(run_id), segment(name)
    for method, path in (
        ("GET", f"/api/runs/{run_id}"),
        ("POST", f"/api/runs/{run_id}/cancel"),
        ("GET", f"/api/schedules/{name}"),
        ("DELETE", f"/api/schedules/{name}"),
    ):
        before = stored_state(core)
        response = api.open(path, method=method)
        if response.status_code < 400 and method != "GET":
            return
        check(core, before, response.status_code, f"{method} {path!r}")


FORM = "application/x-www-form-urlencoded"
#: A backfill as the API takes it (and the page's form, as text), each to be spoiled.
VALID_BACKFILL = {"from": "2026-01-01T00:00", "to": "2026-01-01T06:00", "only": "missing",
                  "max_running": 2, "dry_run": True}  # fmt: skip
backfill_bodies = st.one_of(
    st.builds(
        lambda key, value: {**VALID_BACKFILL, key: value},
        st.sampled_from([*VALID_BACKFILL, "x"]),
        st.one_of(hostile, numbers, st.sampled_from(["all", "failed", "2026-01-01", False])),
    ),
    st.builds(lambda body: {**VALID_BACKFILL, **body, "dry_run": False}, st.just({})),
    json_values,
)


@given(body=backfill_bodies, name=st.sampled_from(["fuzz-a", "fuzz-a", "nope"]) | text_values)
def test_backfill_requests(
    core: Core, worker: Path, api: FlaskClient, client: FlaskClient, body: Any, name: str
) -> None:
    settle(core)
    if not api.get("/api/schedules/fuzz-a").status_code == 200:
        created = api.post("/api/schedules", json=VALID_SCHEDULES[0])
        assert created.status_code == 201, created.json
    path = f"/schedules/{segment(name)}/backfill"
    form = {key: str(value) for key, value in body.items()} if isinstance(body, dict) else {}
    form |= {"action": "start", "csrf_token": csrf_token(client, "/schedules/new")}
    for send in (
        lambda: api.post(f"/api{path}", data=body_of(body), content_type="application/json"),
        lambda: client.post(path, data=encoded(form), content_type=FORM),
    ):
        before = stored_state(core)
        response = send()
        check(core, before, response.status_code, f"backfill {name!r} {body!r}")
        if response.status_code < 400:
            # A started backfill: stop it, and let the runs it made end before the next example.
            with core.reading() as session:
                going = session.scalars(select(Backfill.id).where(Backfill.state == "running"))
                ids = list(going)
            for backfill_id in ids:
                api.post(f"/api/backfills/{backfill_id}/cancel")
            settle(core)


# --- The admin -------------------------------------------------------------------------------


FORM_FIELDS = [
    "name", "job", "cron", "timezone", "interval_seconds", "overlap", "queue", "priority",
    "deadline_seconds", "description", "enabled", "params_job", "params.n", "params.since",
    "params.until", "params.older_than_days",
]  # fmt: skip
#: Forms as the page posts them, each to be spoiled in a field or two.
VALID_FORMS = [
    {"name": "fuzz-a", "job": "tests.sum_squares", "params_job": "tests.sum_squares",
     "cron": "0 * * * *", "timezone": "UTC", "params.n": "5", "enabled": "y"},
    {"name": "fuzz-b", "job": "reports.sales_summary", "params_job": "reports.sales_summary",
     "interval_seconds": "3600", "timezone": "Europe/Berlin", "description": "hourly",
     "overlap": "skip", "queue": "reports", "priority": "3", "deadline_seconds": "600"},
    {"name": "fuzz-a", "job": "cleanups.purge_runs", "params_job": "cleanups.purge_runs",
     "cron": "30 3 * * *", "params.older_than_days": "30"},
]  # fmt: skip


@given(
    fields=st.one_of(
        st.dictionaries(st.sampled_from(FORM_FIELDS), query_values, max_size=10),
        st.builds(
            lambda base, change: {**base, **change},
            st.sampled_from(VALID_FORMS),
            st.dictionaries(st.sampled_from(FORM_FIELDS), query_values, max_size=2),
        ),
    ),
    edit=st.booleans(),
)
def test_admin_schedule_form(
    core: Core, worker: Path, client: FlaskClient, fields: dict, edit: bool
) -> None:
    settle(core)
    path = "/schedules/fuzz-a/edit" if edit else "/schedules/new"
    form = {**fields, "csrf_token": csrf_token(client, "/schedules/new")}
    before = stored_state(core)
    response = client.post(
        path, data=encoded(form), content_type="application/x-www-form-urlencoded"
    )
    check(core, before, response.status_code, f"POST {path} {fields!r}")
    if response.status_code == 200:  # the form again, with the new job's params: not saved
        # (The session's last request may be written: the request was answered, not refused.)
        difference = changed(before, stored_state(core))
        assert difference in ([], ["sessions"]), f"POST {path} {fields!r}: 200 but {difference}"
    if response.status_code == 302:
        shown = response.headers["Location"]
        shows(client, client, ["/", "/schedules/", shown, shown.rstrip("/") + "/edit"], fields)


@given(
    args=st.dictionaries(st.sampled_from(["cron", "timezone", "interval_seconds"]), query_values)
)
def test_schedule_preview(core: Core, client: FlaskClient, args: dict) -> None:
    before = stored_state(core)
    response = client.get("/schedules/preview", query_string=encoded(args))
    check(core, before, response.status_code, f"preview {args!r}")


@given(
    args=st.dictionaries(
        st.sampled_from(["job", "status", "before", "limit", "ids", "x"]), query_values
    ),
    path=st.sampled_from(["/runs/", "/runs/progress.json", "/results/", "/schedules/", "/"]),
)
def test_admin_lists_and_filters(core: Core, client: FlaskClient, args: dict, path: str) -> None:
    before = stored_state(core)
    response = client.get(path, query_string=encoded(args))
    check(core, before, response.status_code, f"GET {path} {args!r}")


@given(
    path=st.sampled_from(["/results/reports.sales_summary", "/results/tests.sum_squares",
                          "/schedules/new", "/access/"])
    | text_values.map(lambda t: "/results/" + segment(t)),
    args=st.dictionaries(st.sampled_from(["limit", "job", "x"]), query_values, max_size=2),
)  # fmt: skip
def test_admin_pages(core: Core, client: FlaskClient, path: str, args: dict) -> None:
    before = stored_state(core)
    response = client.get(path, query_string=encoded(args))
    response.close()
    check(core, before, response.status_code, f"GET {path!r} {args!r}")


@given(
    target=text_values,
    action=st.sampled_from(["runs/{}/retry", "runs/{}/cancel", "access/users/{}/remove",
                            "access/tokens/{}/remove"]),
)  # fmt: skip
def test_admin_run_and_access_actions(
    core: Core, worker: Path, client: FlaskClient, target: str, action: str
) -> None:
    settle(core)
    token = csrf_token(client, "/schedules/new")
    before = stored_state(core)
    path = "/" + action.format(segment(target))
    response = client.post(path, data={"csrf_token": token})
    if response.status_code >= 400:
        check(core, before, response.status_code, f"POST {path!r}")


@settings(max_examples=settings().max_examples // 3)  # each checks a password hash: slow
@given(name=text_values, password=text_values)
def test_sign_in_fields(
    core: Core, app: Flask, admin: tuple[str, str], name: str, password: str
) -> None:
    core.redis.delete(*core.redis.keys(LOGIN_ATTEMPTS_KEY_PREFIX + "*") or ["-"])
    client = app.test_client()
    form = {"name": name, "password": password, "csrf_token": csrf_token(client)}
    response = client.post(
        "/login", data=encoded(form), content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code in (200, 400, 401), (name, password, response.status_code)
    assert client.get("/").status_code == 302  # not signed in


@given(name=text_values, action=st.sampled_from(["enable", "disable", "delete", "run"]))
def test_admin_schedule_actions(
    core: Core, worker: Path, client: FlaskClient, name: str, action: str
) -> None:
    settle(core)
    token = csrf_token(client, "/schedules/new")
    before = stored_state(core)
    response = client.post(f"/schedules/{segment(name)}/{action}", data={"csrf_token": token})
    if response.status_code >= 400:
        check(core, before, response.status_code, f"{action} {name!r}")


#: Names for the bulk enable and disable: schedules that exist (fuzz-a, fuzz-b) or not.
bulk_names = st.lists(st.sampled_from(["fuzz-a", "fuzz-b"]) | text_values, max_size=4)


def two_schedules(core: Core, celery: Celery) -> None:
    """fuzz-a and fuzz-b exist (as the first valid bodies), for bulk requests to find."""
    for body in VALID_SCHEDULES[:2]:
        spec = schedules.validate_schedule(core, body)
        schedules.save_schedule(core, celery, spec, actor="fuzz", mode="upsert")


@given(
    action=st.sampled_from(["enable", "disable"]),
    body=st.one_of(st.fixed_dictionaries({"names": bulk_names}), json_values),
)
def test_api_bulk_enable_and_disable(
    core: Core, celery_app: Celery, api: FlaskClient, action: str, body: Any
) -> None:
    two_schedules(core, celery_app)
    before = stored_state(core)
    path = f"/api/schedules/{action}"
    response = api.post(path, data=body_of(body), content_type="application/json")
    check(core, before, response.status_code, f"POST {path} {body!r}")


@given(
    action=st.sampled_from(["enable", "disable"]) | text_values,
    names=bulk_names,
    back=st.dictionaries(st.sampled_from(["q", "job", "queue", "enabled", "page"]), query_values),
)
def test_admin_bulk_form(
    core: Core, celery_app: Celery, client: FlaskClient, action: str, names: list[str],
    back: dict[str, str],
) -> None:  # fmt: skip
    two_schedules(core, celery_app)
    token = csrf_token(client, "/schedules/new")
    before = stored_state(core)
    fields = [("csrf_token", token), ("action", action), *(("names", name) for name in names)]
    body = "&".join(f"{segment(key)}={segment(value)}" for key, value in [*fields, *back.items()])
    response = client.post(
        "/schedules/", data=body, content_type="application/x-www-form-urlencoded"
    )
    check(core, before, response.status_code, f"bulk {action!r} {names!r} {back!r}")


@settings(max_examples=settings().max_examples // 3)  # each checks a password hash: slow
@given(nxt=text_values)
def test_sign_in_next(core: Core, app: Flask, admin: tuple[str, str], nxt: str) -> None:
    core.redis.delete(*core.redis.keys(LOGIN_ATTEMPTS_KEY_PREFIX + "*") or ["-"])
    client = app.test_client()
    form = {"name": admin[0], "password": admin[1], "csrf_token": csrf_token(client)}
    response = client.post("/login", query_string=encoded({"next": nxt}), data=form)
    assert response.status_code == 302, (nxt, response.status_code)
    location = response.headers["Location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location


# --- Headers, cookies, sign-out and query strings --------------------------------------------


def as_header(value: str) -> str:
    """``value`` as a server hands a header to the app: its UTF-8 bytes read as Latin-1."""
    return value.encode("utf-8", "surrogatepass").decode("latin-1")


#: Header values: what a client may send as a server hands it over, and (as a test client or
#: another server may) any text at all. CR and LF end a header: no server passes them on.
header_text = st.one_of(
    st.one_of(
        tricky_text,
        any_text,
        st.sampled_from(["x" * 20000, "\x00", "é", "\u2028", "a,b", ";", "=", "%00", "\xff\xfe"]),
    ).map(as_header),
    any_text,
).map(lambda value: value.replace("\r", "").replace("\n", ""))
authorizations = st.one_of(
    header_text,
    header_text.map(lambda junk: "Bearer " + junk),
    st.sampled_from(
        ["Bearer", "Bearer ", "Bearer  {token}", "Bearer {token} ", "bearer {token}",
         "Bearer\t{token}", " Bearer {token}", "{token}", "Bearer {token}x",
         "Bearer " + "a" * 20000,
         "Basic YWRtaW46Y29ycmVjdCBob3JzZSBiYXR0ZXJ5", "Basic ", "Basic %%%", "Bearer é",
         "Bearer {token}, Bearer {token}"]
    ),
)  # fmt: skip
content_types = st.one_of(
    header_text,
    st.sampled_from(
        ["application/json", "application/json; charset=latin-1",
         "application/json; charset=utf-16", "application/json; charset=bogus",
         "multipart/form-data", "multipart/form-data; boundary=x",
         "multipart/form-data; boundary=", "multipart/form-data; boundary=" + "b" * 300,
         "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=latin-1",
         "text/plain", "", "*/*", "application/json;;;", "application/json; charset=\"utf-8"]
    ),
)  # fmt: skip
#: What follows "session=" in the Cookie header: junk, or the real cookie spoilt.
cookie_values = st.one_of(
    header_text,
    st.sampled_from(["{cookie}", "{cookie}x", "x{cookie}", "{cookie}; session=x",
                     "x; session={cookie}", '"{cookie}"', "{cookie}" + "=" * 3, "", ".", "..",
                     "eyJzZXNzaW9uX2lkIjoieCJ9.aaaa.bbbb"]),
)  # fmt: skip
odd_headers = st.dictionaries(
    st.sampled_from(
        ["Authorization", "Content-Type", "Host", "X-Forwarded-For", "X-Forwarded-Proto",
         "X-Forwarded-Host", "Accept", "Accept-Charset", "Content-Encoding", "Transfer-Encoding",
         "Referer", "Origin", "If-Modified-Since", "Range", "X-CSRFToken"]
    ),
    header_text,
    max_size=4,
)  # fmt: skip
request_bodies = st.one_of(
    st.binary(max_size=100),
    st.sampled_from([b"", b"{}", b'{"params": {"n": 1}}', b"--x\r\n\r\n--x--\r\n", b"a=b&a=c",
                     json.dumps(VALID_SCHEDULES[0]).encode()]),
)  # fmt: skip
REQUESTS = [
    ("GET", "/"), ("GET", "/runs/"), ("GET", "/schedules/"), ("GET", "/results/"),
    ("GET", "/access/"), ("GET", "/schedules/preview"), ("GET", "/healthz"), ("GET", "/login"),
    ("GET", "/api/jobs"), ("GET", "/api/schedules"), ("POST", "/api/schedules"),
    ("POST", "/api/jobs/tests.sum_squares/runs"), ("PUT", "/api/schedules/fuzz-a"),
    ("POST", "/login"), ("POST", "/logout"), ("POST", "/schedules/new"),
    ("POST", "/schedules/fuzz-a/disable"),
]  # fmt: skip


@pytest.fixture
def proxied_app(core: Core) -> Iterator[Flask]:
    """The app as run behind one TLS proxy (BATCH_PROXY_COUNT=1): it believes X-Forwarded-*."""
    from batch.web import create_app

    app = create_app(replace(core.settings, proxy_count=1))
    app.config["TESTING"] = True
    yield app
    close_celery(app.extensions["batch_celery"])


def fresh_session(app: Flask, core: Core, name: str) -> tuple[str, str]:
    """A new session of user ``name``: its cookie value and the CSRF token that goes with it
    (no password check: a hash per example would be slow)."""
    client = app.test_client()
    with client.session_transaction() as session:
        session[SESSION_KEY] = users.start_session(core, name)
    token = csrf_token(client, "/access/")
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value, token


def signed_in(app: Flask, cookie: str) -> bool:
    response = app.test_client(use_cookies=False).get("/", headers={"Cookie": f"session={cookie}"})
    assert response.status_code in (200, 302), response.status_code
    return response.status_code == 200


@given(
    request=st.sampled_from(REQUESTS),
    headers=odd_headers,
    authorization=st.none() | authorizations,
    cookie=st.just("{cookie}") | st.none() | cookie_values,
    content_type=st.none() | content_types,
    body=request_bodies,
    with_csrf=st.booleans(),
)
def test_odd_headers_on_any_route(
    core: Core,
    worker: Path,
    proxied_app: Flask,
    admin: tuple[str, str],
    api_token: str,
    request: tuple[str, str],
    headers: dict[str, str],
    authorization: str | None,
    cookie: str | None,
    content_type: str | None,
    body: bytes,
    with_csrf: bool,
) -> None:
    settle(core)
    real_cookie, token = fresh_session(proxied_app, core, admin[0])
    core.redis.delete(*core.redis.keys(LOGIN_ATTEMPTS_KEY_PREFIX + "*") or ["-"])
    sent = dict(headers)
    if authorization is not None:
        sent["Authorization"] = authorization.replace("{token}", api_token)
    if cookie is not None:
        sent["Cookie"] = "session=" + cookie.replace("{cookie}", real_cookie)
    if content_type is not None:
        sent["Content-Type"] = content_type
    if with_csrf:
        sent["X-CSRFToken"] = token
    method, path = request
    before = stored_state(core)
    client = proxied_app.test_client(use_cookies=False)
    response = client.open(path, method=method, data=body, headers=sent)
    response.close()
    check(core, before, response.status_code, f"{method} {path} {sent!r} {body!r}")


#: What a signed session cookie may hold, were SECRET_KEY known: any value under any key.
session_contents = st.dictionaries(
    st.sampled_from([SESSION_KEY, "csrf_token", "_flashes", "_fresh", "_user_id", "x"]),
    json_values | st.sampled_from(["{session}", ["{session}"], {"{session}": 1}]),
    max_size=3,
)


@given(
    contents=session_contents,
    request=st.sampled_from(REQUESTS),
    with_csrf=st.booleans(),
)
def test_signed_session_of_any_content(
    core: Core,
    app: Flask,
    admin: tuple[str, str],
    contents: dict[str, Any],
    request: tuple[str, str],
    with_csrf: bool,
) -> None:
    """A cookie signed with our key but holding anything: never a server error, and only the
    live session id, as a string, signs anyone in."""
    real_cookie, token = fresh_session(app, core, admin[0])
    real = app.session_interface.get_signing_serializer(app).loads(real_cookie)  # type: ignore[attr-defined]
    contents = json.loads(json.dumps(contents).replace("{session}", real[SESSION_KEY]))
    cookie = app.session_interface.get_signing_serializer(app).dumps(contents)  # type: ignore[attr-defined]
    headers = {"Cookie": f"session={cookie}"}
    if with_csrf:
        headers["X-CSRFToken"] = token
    method, path = request
    before = stored_state(core)
    response = app.test_client(use_cookies=False).open(path, method=method, headers=headers)
    response.close()
    check(core, before, response.status_code, f"{method} {path} {contents!r}")
    if contents.get(SESSION_KEY) != real[SESSION_KEY]:
        assert not signed_in(app, cookie), contents


logout_fields = st.dictionaries(
    st.sampled_from(["csrf_token", "next", "session_id", "name", "x"]) | any_text,
    query_values,
    max_size=3,
)


@given(
    fields=logout_fields,
    raw=st.none() | request_bodies,
    content_type=st.none() | content_types,
    headers=odd_headers,
    with_csrf=st.sampled_from(["form", "header", "none"]),
)
def test_sign_out(
    core: Core,
    app: Flask,
    admin: tuple[str, str],
    fields: dict[str, str],
    raw: bytes | None,
    content_type: str | None,
    headers: dict[str, str],
    with_csrf: str,
) -> None:
    """A sign-out is refused (and the session goes on) or done: then no copy of the cookie
    signs anyone in again, and a second sign-out with it is no server error."""
    cookie, token = fresh_session(app, core, admin[0])
    sent = {**headers, "Cookie": f"session={cookie}"}
    if with_csrf == "form":
        fields = {**fields, "csrf_token": token}
    elif with_csrf == "header":
        sent["X-CSRFToken"] = token
    body = encoded(fields).encode() if raw is None else raw
    sent["Content-Type"] = (
        content_type if content_type is not None else "application/x-www-form-urlencoded"
    )
    before = stored_state(core)
    response = app.test_client(use_cookies=False).post("/logout", data=body, headers=sent)
    what = f"logout {sent!r} {body!r}"
    check(core, before, response.status_code, what)
    if response.status_code >= 400:
        assert signed_in(app, cookie), what
        return
    assert response.status_code == 302, what
    assert not signed_in(app, cookie), what
    again = app.test_client(use_cookies=False).post(
        "/logout", data={"csrf_token": token}, headers={"Cookie": f"session={cookie}"}
    )
    assert again.status_code == 302 and "/login" in again.headers["Location"], what
    assert not signed_in(app, cookie), what


ACCESS_PATHS = [
    "/access/users/{}/remove", "/access/tokens/{}/remove", "/access/users/{}", "/access/tokens/{}",
    "/access/users", "/access/tokens", "/access/users/add", "/access/tokens/add", "/access/",
]  # fmt: skip


@given(
    path=st.sampled_from(ACCESS_PATHS),
    target=st.sampled_from(["admin", "tests", "Admin", "admin ", "admin\n", "tests%00"])
    | text_values,
    fields=st.dictionaries(
        st.sampled_from(["name", "password", "token", "confirm", "csrf_token", "x"]),
        query_values,
        max_size=4,
    ),
    with_csrf=st.booleans(),
)
def test_access_forms(
    core: Core,
    app: Flask,
    accounts: tuple[User, ApiToken],
    path: str,
    target: str,
    fields: dict[str, str],
    with_csrf: bool,
) -> None:
    """Removing users and tokens (and posting to what looks like an add form) with any name,
    any fields: refused with nothing changed, or done."""
    restore_accounts(core, accounts)
    cookie, token = fresh_session(app, core, accounts[0].name)
    if with_csrf:
        fields = {**fields, "csrf_token": token}
    url = path.format(segment(target))
    before = stored_state(core)
    response = app.test_client(use_cookies=False).post(
        url,
        data=encoded(fields),
        headers={"Cookie": f"session={cookie}"},
        content_type="application/x-www-form-urlencoded",
    )
    check(core, before, response.status_code, f"POST {url!r} {fields!r}")


@pytest.fixture
def accounts(core: Core, admin: tuple[str, str], api_token: str) -> tuple[User, ApiToken]:
    """The admin user and the ``tests`` token as stored, to put back when an example removes
    them (same hashes: no hashing per example)."""
    with core.reading() as session:
        user, token = session.get(User, admin[0]), session.get(ApiToken, "tests")
        assert user is not None and token is not None
        session.expunge_all()
        return user, token


def restore_accounts(core: Core, accounts: tuple[User, ApiToken]) -> None:
    user, token = accounts
    with core.transaction() as session:
        if session.get(User, user.name) is None:
            session.add(User(name=user.name, password_hash=user.password_hash))
        if session.get(ApiToken, token.name) is None:
            session.add(ApiToken(name=token.name, token_hash=token.token_hash))


#: Query strings as they arrive: repeated keys, array-like keys, and percent-escapes that
#: decode to NUL, to surrogates, to invalid UTF-8, or to nothing at all.
query_keys = st.sampled_from(
    ["job", "status", "before", "limit", "ids", "cron", "timezone", "interval_seconds", "next",
     "job[]", "ids[]", "limit[0]", "job[x]", "", "%00", "x"]
)  # fmt: skip
raw_query_values = st.one_of(
    query_values.map(segment),
    st.sampled_from(
        ["%00", "%ED%A0%80", "%ED%BF%BF", "%FF", "%C0%80", "%", "%2", "%%", "%zz", "+", "%2B",
         "a%00b", "tests.sum_squares%00", "1%00", "10%0A", "0001-01-01T00%3A00%3A00%2B01%3A00~x",
         "a,b,,c", "%2C" * 50, "x" * 3000, "[]", "{}", "1e309"]
    ),
)  # fmt: skip
raw_queries = st.lists(st.tuples(query_keys, raw_query_values), max_size=6).map(
    lambda pairs: "&".join(f"{key}={value}" for key, value in pairs)
) | st.sampled_from(["&&&", "=", "==", "&=&", "job", "job&job=", ";", "a=1;b=2"])
LIST_PAGES = [
    "/", "/runs/", "/runs/progress.json", "/results/", "/results/reports.sales_summary",
    "/results/tests.sum_squares", "/schedules/", "/schedules/preview", "/schedules/new",
    "/schedules/fuzz-a", "/schedules/fuzz-a/edit", "/access/", "/login", "/api/jobs",
    "/api/schedules", "/api/schedules/fuzz-a", "/api/runs/x",
]  # fmt: skip


@given(path=st.sampled_from(LIST_PAGES), query=raw_queries)
def test_query_strings(
    core: Core, client: FlaskClient, api: FlaskClient, path: str, query: str
) -> None:
    before = stored_state(core)
    response = (api if path.startswith("/api/") else client).get(path, query_string=query)
    response.close()
    check(core, before, response.status_code, f"GET {path}?{query}")


# --- batch schedules import ----------------------------------------------------------------------


@given(body=schedule_bodies, raw=st.none() | st.binary(max_size=80))
def test_schedules_import(core: Core, tmp_path_factory: Any, body: dict, raw: bytes | None) -> None:
    folder: Path = tmp_path_factory.mktemp("import")
    file = folder / "fuzz.toml"
    if raw is None:
        lines = [f"{key} = {json.dumps(value)}" for key, value in body.items()]
        file.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass"))
    else:
        file.write_bytes(raw)
    before = stored_state(core)
    result = CliRunner().invoke(
        main, ["schedules", "import", str(folder)], env=settings_env(core.settings)
    )
    assert "Traceback" not in result.output + result.stderr, result.stderr
    assert result.exit_code in (0, 2), (result.exit_code, result.stderr)
    if result.exit_code:
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
        assert stored_state(core) == before
