"""Sessions that end, sign-in that goes nowhere else, and auth that never blocks."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime, timedelta
from urllib.parse import quote

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete, func, select, text, update

from batch import users
from batch.celery_app import close_celery
from batch.core import Core
from batch.db import utcnow
from batch.models import ApiToken, Schedule, User, UserSession
from batch.settings import Settings
from tests.web.conftest import csrf_token
from tests.web.test_schedules_pages import FORM


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


# --- Sessions that end ---------------------------------------------------------------------------


def with_cookie(app: Flask, cookie: str) -> FlaskClient:
    """Another browser holding a copy of a session cookie."""
    other = app.test_client()
    other.set_cookie("session", cookie)
    return other


def cookie_of(client: FlaskClient) -> str:
    cookie = client.get_cookie("session")
    assert cookie is not None
    return cookie.value


def signed_out(app: Flask, cookie: str) -> bool:
    """Whether a browser with ``cookie`` is sent to sign in."""
    response = with_cookie(app, cookie).get("/runs/")
    return response.status_code == 302 and response.headers["Location"].startswith("/login")


def count(core: Core, model: type) -> int:
    with core.reading() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_copied_cookie_stops_working_at_sign_out(
    app: Flask, core: Core, client: FlaskClient
) -> None:
    copy = with_cookie(app, cookie_of(client))
    token = csrf_token(copy, "/schedules/new")
    cookie = cookie_of(copy)  # the session id and the CSRF token a form needs
    assert not signed_out(app, cookie)
    assert client.post("/logout", data={"csrf_token": csrf_token(client, "/")}).status_code == 302
    assert signed_out(app, cookie)
    # A form POST with the copy and its valid CSRF token is refused too, and writes nothing.
    response = with_cookie(app, cookie).post("/schedules/new", data={**FORM, "csrf_token": token})
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    assert count(core, Schedule) == count(core, UserSession) == 0


def test_removing_a_user_ends_their_sessions(
    app: Flask, core: Core, client: FlaskClient, admin: tuple[str, str]
) -> None:
    cookie = cookie_of(client)
    users.remove_user(core, admin[0])
    assert signed_out(app, cookie)
    assert count(core, UserSession) == 0


def test_a_cookie_of_a_user_that_no_longer_exists_signs_nobody_in(
    app: Flask, core: Core, client: FlaskClient
) -> None:
    cookie = cookie_of(client)
    with core.transaction() as session:
        session.execute(delete(User))
    assert signed_out(app, cookie)


def test_a_new_password_ends_every_session_of_that_user(
    app: Flask, core: Core, client: FlaskClient, admin: tuple[str, str]
) -> None:
    users.add_user(core, "other", "another long password")
    other = app.test_client()
    other.post(
        "/login",
        data={
            "name": "other",
            "password": "another long password",
            "csrf_token": csrf_token(other),
        },
    )
    cookie, other_cookie = cookie_of(client), cookie_of(other)
    assert not signed_out(app, other_cookie)
    users.set_password(core, admin[0], "a brand new password")
    assert signed_out(app, cookie)
    assert not signed_out(app, other_cookie)
    assert not users.check_login(core, *admin)
    assert users.check_login(core, admin[0], "a brand new password")


def test_a_session_ends_after_its_lifetime(app: Flask, core: Core, client: FlaskClient) -> None:
    with core.reading() as session:
        row = session.execute(select(UserSession)).scalar_one()
    assert row.expires_at - row.created_at == timedelta(hours=12)
    assert not signed_out(app, cookie_of(client))
    with core.transaction() as session:
        session.execute(update(UserSession).values(expires_at=utcnow() - timedelta(seconds=1)))
    assert signed_out(app, cookie_of(client))


def test_the_session_lifetime_is_configured(core: Core, admin: tuple[str, str]) -> None:
    from batch.web import create_app

    app = create_app(replace(core.settings, session_hours=1))
    client = app.test_client()
    name, password = admin
    client.post(
        "/login", data={"name": name, "password": password, "csrf_token": csrf_token(client)}
    )
    close_celery(app.extensions["batch_celery"])
    with core.reading() as session:
        row = session.execute(select(UserSession)).scalar_one()
    assert row.expires_at - row.created_at == timedelta(hours=1)


def test_the_cookie_carries_only_a_session_id_stored_hashed(
    app: Flask, core: Core, client: FlaskClient
) -> None:
    serializer = app.session_interface.get_signing_serializer(app)
    assert serializer is not None
    content = serializer.loads(cookie_of(client))
    assert "session_id" in content and set(content) <= {"session_id", "csrf_token"}
    with core.reading() as session:
        stored = session.scalars(select(UserSession.id_hash)).all()
    assert stored == [hashlib.sha256(content["session_id"].encode()).hexdigest()]
    # A cookie signed with the key but naming a made-up session, or a user, signs nobody in.
    assert signed_out(app, serializer.dumps({"session_id": "made-up"}))
    assert signed_out(app, serializer.dumps({"user": "admin"}))


def test_the_session_lifetime_is_read_and_checked() -> None:
    assert Settings.from_env({}, services_file=None).session_hours == 12
    assert Settings.from_env({"BATCH_SESSION_HOURS": "2"}, services_file=None).session_hours == 2
    with pytest.raises(ValueError, match="BATCH_SESSION_HOURS must be at least 1"):
        Settings.from_env({"BATCH_SESSION_HOURS": "0"}, services_file=None)


# --- Users and tokens in the admin ---------------------------------------------------------------


def test_the_access_page_lists_users_and_tokens_and_no_secret(
    app: Flask, core: Core, client: FlaskClient, api_token: str
) -> None:
    assert app.test_client().get("/access/").status_code == 302
    page = client.get("/access/")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'id="user-admin"' in html and 'id="token-tests"' in html
    with core.reading() as session:
        secrets = [session.get_one(ApiToken, "tests").token_hash]
        secrets += [session.get_one(User, "admin").password_hash]
        secrets += session.scalars(select(UserSession.id_hash)).all()
    assert api_token not in html and not any(secret in html for secret in secrets)


def test_removing_a_token_in_the_admin_needs_csrf(
    core: Core, client: FlaskClient, api_token: str
) -> None:
    assert client.post("/access/tokens/tests/remove").status_code == 400
    assert users.find_token(core, api_token).name == "tests"
    token = csrf_token(client, "/access/")
    assert client.post("/access/tokens/ghost/remove", data={"csrf_token": token}).status_code == 404
    response = client.post("/access/tokens/tests/remove", data={"csrf_token": token})
    assert (response.status_code, response.headers["Location"]) == (302, "/access/")
    assert users.find_token(core, api_token) is None
    assert "Token tests removed" in client.get("/access/").get_data(as_text=True)


def test_removing_a_user_in_the_admin_signs_them_out(
    app: Flask, core: Core, client: FlaskClient
) -> None:
    users.add_user(core, "bob", "bob's long password")
    bob = app.test_client()
    bob.post(
        "/login",
        data={"name": "bob", "password": "bob's long password", "csrf_token": csrf_token(bob)},
    )
    cookie = cookie_of(bob)
    assert not signed_out(app, cookie)
    token = csrf_token(client, "/access/")
    assert client.post("/access/users/bob/remove").status_code == 400
    assert client.post("/access/users/ghost/remove", data={"csrf_token": token}).status_code == 404
    assert not signed_out(app, cookie)
    response = client.post("/access/users/bob/remove", data={"csrf_token": token})
    assert (response.status_code, response.headers["Location"]) == (302, "/access/")
    assert signed_out(app, cookie)
    assert [account.name for account in users.list_users(core)] == ["admin"]
    # Removing oneself signs oneself out.
    response = client.post("/access/users/admin/remove", data={"csrf_token": token})
    assert response.status_code == 302
    assert client.get("/access/").status_code == 302
    assert count(core, User) == count(core, UserSession) == 0


# --- Sign-in limits: per address (behind a known number of proxies) and per account -------------


def attempt(
    client: FlaskClient, name: str, password: str = "wrong", *, forwarded: str | None = None
) -> int:
    data = {"name": name, "password": password, "csrf_token": csrf_token(client)}
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    return client.post("/login", data=data, headers=headers).status_code


def test_sign_in_is_limited_per_account_from_any_address(
    app: Flask, core: Core, admin: tuple[str, str]
) -> None:
    clients = [app.test_client() for _ in range(12)]
    for number, client in enumerate(clients):
        client.environ_base["REMOTE_ADDR"] = f"198.51.100.{number}"
    codes = [attempt(client, "admin") for client in clients[:11]]
    assert codes == [401] * 10 + [429]
    assert attempt(clients[11], *admin) == 429  # the right password waits out the minute too
    assert attempt(clients[11], "someone-else") == 401
    assert users.check_login(core, *admin)


def test_behind_no_proxy_a_forwarded_address_is_not_believed(app: Flask) -> None:
    client = app.test_client()
    codes = [attempt(client, f"user{n}", forwarded=f"203.0.113.{n}") for n in range(11)]
    assert codes == [401] * 10 + [429]


def test_behind_a_proxy_each_client_address_has_its_own_limit(core: Core) -> None:
    from batch.web import create_app

    app = create_app(replace(core.settings, proxy_count=1))
    core.redis.delete(*core.redis.keys("batch:login-attempts:*") or ["-"])
    try:
        client = app.test_client()
        # The proxy appends the address it saw; whatever the client sent before it is not trusted.
        first = "10.9.9.9, 203.0.113.1"
        codes = [attempt(client, f"user{n}", forwarded=first) for n in range(11)]
        assert codes == [401] * 10 + [429]
        assert attempt(client, "user11", forwarded="10.9.9.9, 203.0.113.2") == 401
        assert core.redis.get("batch:login-attempts:203.0.113.1") == "11"
    finally:
        close_celery(app.extensions["batch_celery"])


def test_the_proxy_count_is_read_and_checked() -> None:
    assert Settings.from_env({}, services_file=None).proxy_count == 0
    assert Settings.from_env({"BATCH_PROXY_COUNT": "2"}, services_file=None).proxy_count == 2
    with pytest.raises(ValueError, match="BATCH_PROXY_COUNT must be 0 or more"):
        Settings.from_env({"BATCH_PROXY_COUNT": "-1"}, services_file=None)


@pytest.mark.parametrize("name", ["a\x00b", "x" * 300, "admin\n", "\u00e9\u2028"])
def test_a_name_that_cannot_exist_is_refused_without_a_server_error(
    core: Core, client: FlaskClient, api_token: str, name: str
) -> None:
    assert attempt(client.application.test_client(), name) == 401
    token = csrf_token(client, "/access/")
    for kind in ("users", "tokens"):
        response = client.post(f"/access/{kind}/{quote(name)}/remove", data={"csrf_token": token})
        assert response.status_code == 404
    assert count(core, User) == count(core, ApiToken) == count(core, UserSession) == 1
