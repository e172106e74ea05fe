"""Web fixtures: a signed-in client and an API client (the app itself is in tests/conftest)."""

from __future__ import annotations

import html
import re
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from batch import users
from batch.core import Core
from batch.models import (
    ApiToken,
    AuditEntry,
    Backfill,
    Run,
    RunChunk,
    RunStat,
    Schedule,
    ScheduleChange,
    User,
    UserSession,
)

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')
FIELD_ERROR = re.compile(
    r'class="field-error" data-field="([^"]+)"[^>]*>(.*?)</(?:p|li|span)>', re.S
)


#: The tables a request can write: the accounts too, down to when each was last used.
STORED = (
    Schedule, ScheduleChange, Run, RunChunk, RunStat, Backfill, AuditEntry, User, ApiToken,
    UserSession,
)  # fmt: skip


def stored_state(core: Core) -> tuple[Any, ...]:
    """What a refused request must leave as it was: every row a request can write (schedules
    and the notes of their changes, runs, their chunks, the audit log, users, tokens, sessions)
    and every RedBeat key, dumped."""
    with core.reading() as session:
        tables = tuple(
            sorted(map(repr, session.execute(select(model.__table__)).all())) for model in STORED
        )
    keys = sorted(core.redis.scan_iter(match="batch:redbeat:*"))
    return tables, {key: core.redis.dump(key) for key in keys}


def field_errors(page: str) -> dict[str, str]:
    """Each error shown at a field of a form, by field."""
    return {
        key: html.unescape(re.sub(r"<[^>]+>", "", message).strip())
        for key, message in FIELD_ERROR.findall(page)
    }


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """The CSRF token of the form on ``path`` (as a browser would read it)."""
    match = CSRF_RE.search(client.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


@pytest.fixture
def client(app: Flask, admin: tuple[str, str]) -> FlaskClient:
    """A client signed in as the admin user, through the real login form."""
    client = app.test_client()
    name, password = admin
    response = client.post(
        "/login", data={"name": name, "password": password, "csrf_token": csrf_token(client)}
    )
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


@pytest.fixture
def api_token(core: Core) -> str:
    return users.add_token(core, "tests")


@pytest.fixture
def api(app: Flask, api_token: str) -> FlaskClient:
    """A client that sends the bearer token on every request."""
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {api_token}"
    return client
