"""Sessions that end, sign-in that goes nowhere else, and auth that never blocks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pytest
from flask import Flask
from sqlalchemy import text

from batch.core import Core
from batch.models import ApiToken
from tests.web.conftest import csrf_token


def sign_in(app: Flask, admin: tuple[str, str], next_path: str) -> str:
    """Sign in through the form with ``?next=next_path``; the Location answered."""
    client = app.test_client()
    name, password = admin
    response = client.post(
        "/login",
        query_string={"next": next_path},
        data={"name": name, "password": password, "csrf_token": csrf_token(client)},
    )
    assert response.status_code == 302
    return response.headers["Location"]


@pytest.mark.parametrize(
    "target",
    [
        "/\t/evil.example",
        "/\n/evil.example",
        "/\r\n/evil.example",
        "\t//evil.example",
        "/\t\\evil.example",
        "/runs/\r\nSet-Cookie: x=1",
        "/runs/\x00",
        "/runs/\x85",
        "https://evil.example/",
        "https:/evil.example",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "javascript:alert(1)",
        "runs/",
        "",
    ],
)
def test_sign_in_never_redirects_off_site(app: Flask, admin: tuple[str, str], target: str) -> None:
    assert sign_in(app, admin, target) == "/"


@pytest.mark.parametrize("target", ["/runs/", "/runs/?status=failed&job=a.b", "/schedules/x%20y"])
def test_sign_in_follows_a_same_site_path(app: Flask, admin: tuple[str, str], target: str) -> None:
    assert sign_in(app, admin, target) == target


@contextmanager
def write_lock_held(core: Core) -> Iterator[None]:
    """Another connection holds the database's write lock (SQLite) or the tokens' table lock."""
    with core.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # The writing engine's BEGIN is BEGIN IMMEDIATE: this takes SQLite's write lock.
            connection.begin()
            connection.execute(text("UPDATE users SET password_hash = password_hash"))
        else:
            connection.begin()
            connection.execute(text("LOCK TABLE api_tokens IN EXCLUSIVE MODE"))
        try:
            yield
        finally:
            connection.rollback()


def last_used(core: Core, name: str) -> datetime | None:
    with core.reading() as session:
        return session.get_one(ApiToken, name).last_used_at


def test_a_held_write_lock_never_delays_or_fails_a_token_check(
    app: Flask, core: Core, admin: tuple[str, str], api_token: str
) -> None:
    client = app.test_client()
    with write_lock_held(core):
        started = time.monotonic()
        bogus = client.get("/api/jobs", headers={"Authorization": "Bearer not-a-token"})
        good = client.get("/api/jobs", headers={"Authorization": f"Bearer {api_token}"})
        took = time.monotonic() - started
    assert (bogus.status_code, good.status_code) == (401, 200)
    assert took < 2
    # The busy update was skipped, not queued: the next request with the lock free makes it.
    assert last_used(core, "tests") is None
    assert (
        client.get("/api/jobs", headers={"Authorization": f"Bearer {api_token}"}).status_code == 200
    )
    first = last_used(core, "tests")
    assert first is not None
    # At most once a minute: a request right after writes nothing.
    assert (
        client.get("/api/jobs", headers={"Authorization": f"Bearer {api_token}"}).status_code == 200
    )
    assert last_used(core, "tests") == first


def test_a_bogus_token_writes_nothing(app: Flask, core: Core, api_token: str) -> None:
    response = app.test_client().get("/api/jobs", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert last_used(core, "tests") is None
