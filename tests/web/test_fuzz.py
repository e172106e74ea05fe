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
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import hypothesis.strategies as st
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from sqlalchemy import func, select

from batch.cli import main
from batch.constants import LOGIN_ATTEMPTS_KEY_PREFIX
from batch.core import Core
from batch.models import QUEUED, RUNNING, Run
from tests.conftest import settings_env
from tests.web.conftest import csrf_token, stored_state

settings.register_profile(
    "ci",
    max_examples=100,
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
    assert status < 500, f"{what}: {status}"
    if status >= 400:
        assert stored_state(core) == before, f"{what}: refused with {status} but changed state"


def body_of(value: Any) -> str:
    # As a client would send it: json.dumps writes a lone surrogate as the escape \ud800.
    return json.dumps(value)


def encoded(fields: dict[str, str]) -> str:
    """A query string or form body as a client sends it: UTF-8, percent-encoded; a lone
    surrogate goes as the bytes Python would write for it."""
    return urlencode({key: value.encode("utf-8", "surrogatepass") for key, value in fields.items()})


def segment(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


# --- The API ---------------------------------------------------------------------------------


@settings(max_examples=max(settings().max_examples, 300))
@given(
    body=st.one_of(spoiled_schedules, spoiled_schedules, spoiled_schedules, schedule_bodies),
    method=st.sampled_from(["POST", "PUT"]),
)
def test_api_schedule_writes(
    core: Core, worker: Path, api: FlaskClient, body: Any, method: str
) -> None:
    settle(core)
    before = stored_state(core)
    name = body.get("name") if isinstance(body, dict) else None
    path = "/api/schedules" if method == "POST" else f"/api/schedules/{segment(str(name))}"
    response = api.open(path, method=method, data=body_of(body), content_type="application/json")
    check(core, before, response.status_code, f"{method} {path} {body!r}")


@given(
    job=st.sampled_from(JOBS) | text_values,
    body=json_values,
    params=param_values,
    spoiled=spoiled_submits,
)
def test_api_submit(
    core: Core, worker: Path, api: FlaskClient, job: str, body: Any, params: Any, spoiled: Any
) -> None:
    settle(core)
    before = stored_state(core)
    for name, payload in (spoiled, (job, body), (job, {"params": params})):
        response = api.post(
            f"/api/jobs/{segment(name)}/runs",
            data=body_of(payload),
            content_type="application/json",
        )
        if response.status_code < 400:
            return  # accepted: it may write; the rest of this example proves nothing more
        check(core, before, response.status_code, f"submit {name!r} {payload!r}")


@given(raw=st.binary(max_size=200) | any_text.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_api_bodies_that_are_not_json(
    core: Core, worker: Path, api: FlaskClient, raw: bytes
) -> None:
    settle(core)
    before = stored_state(core)
    for path in ("/api/schedules", "/api/jobs/tests.sum_squares/runs"):
        response = api.post(path, data=raw, content_type="application/json")
        check(core, before, response.status_code, f"POST {path} {raw!r}")


@given(run_id=text_values, name=text_values)
def test_api_reads_and_cancels(
    core: Core, worker: Path, api: FlaskClient, run_id: str, name: str
) -> None:
    settle(core)
    before = stored_state(core)
    run_id, name = segment(run_id), segment(name)
    for method, path in (
        ("GET", f"/api/runs/{run_id}"),
        ("POST", f"/api/runs/{run_id}/cancel"),
        ("GET", f"/api/schedules/{name}"),
        ("DELETE", f"/api/schedules/{name}"),
    ):
        response = api.open(path, method=method)
        if response.status_code < 400 and method != "GET":
            return
        check(core, before, response.status_code, f"{method} {path!r}")


# --- The admin -------------------------------------------------------------------------------


@given(
    fields=st.dictionaries(
        st.sampled_from(
            ["name", "job", "cron", "timezone", "interval_seconds", "overlap", "queue",
             "priority", "deadline_seconds", "description", "enabled", "params_job",
             "params.n", "params.since", "params.until", "params.older_than_days"]
        ),
        query_values,
        max_size=10,
    ),
    edit=st.booleans(),
)  # fmt: skip
def test_admin_schedule_form(
    core: Core, worker: Path, client: FlaskClient, fields: dict, edit: bool
) -> None:
    settle(core)
    before = stored_state(core)
    path = "/schedules/fuzz-a/edit" if edit else "/schedules/new"
    form = {**fields, "csrf_token": csrf_token(client, "/schedules/new")}
    response = client.post(
        path, data=encoded(form), content_type="application/x-www-form-urlencoded"
    )
    check(core, before, response.status_code, f"POST {path} {fields!r}")


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
    before = stored_state(core)
    token = csrf_token(client, "/schedules/new")
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
    before = stored_state(core)
    token = csrf_token(client, "/schedules/new")
    response = client.post(f"/schedules/{segment(name)}/{action}", data={"csrf_token": token})
    if response.status_code >= 400:
        check(core, before, response.status_code, f"{action} {name!r}")


@given(nxt=text_values)
def test_sign_in_next(core: Core, app: Flask, admin: tuple[str, str], nxt: str) -> None:
    core.redis.delete(*core.redis.keys(LOGIN_ATTEMPTS_KEY_PREFIX + "*") or ["-"])
    client = app.test_client()
    form = {"name": admin[0], "password": admin[1], "csrf_token": csrf_token(client)}
    response = client.post("/login", query_string=encoded({"next": nxt}), data=form)
    assert response.status_code == 302, (nxt, response.status_code)
    location = response.headers["Location"]
    assert location.startswith("/") and not location.startswith(("//", "/\\")), location


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
