"""Sign-in, sessions, CSRF, rate limiting and tokens."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from batch import users
from batch.core import Core
from batch.exceptions import Conflict, UserError
from tests.web.conftest import csrf_token


def test_healthz_is_open(app: Flask) -> None:
    response = app.test_client().get("/healthz")
    assert response.status_code == 200
    assert response.json == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


@pytest.mark.parametrize("path", ["/", "/schedules/", "/runs/", "/results/", "/nope"])
def test_pages_redirect_to_login(app: Flask, path: str) -> None:
    response = app.test_client().get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login?next=")


@pytest.mark.parametrize("path", ["/api/jobs", "/api/runs/x", "/api/schedules", "/api/nope"])
def test_api_requires_a_token(app: Flask, path: str) -> None:
    client = app.test_client()
    assert client.get(path).status_code == 401
    bad = client.get(path, headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401 and bad.headers["WWW-Authenticate"] == "Bearer"


def test_login_with_a_wrong_password_fails(app: Flask, admin: tuple[str, str]) -> None:
    client = app.test_client()
    token = csrf_token(client)
    response = client.post(
        "/login", data={"name": "admin", "password": "nope", "csrf_token": token}
    )
    assert response.status_code == 401
    assert "wrong name or password" in response.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_login_without_csrf_token_is_refused(app: Flask, admin: tuple[str, str]) -> None:
    name, password = admin
    response = app.test_client().post("/login", data={"name": name, "password": password})
    assert response.status_code == 400


def test_login_redirects_to_next_but_never_off_site(app: Flask, admin: tuple[str, str]) -> None:
    name, password = admin
    cases = [
        ("/runs/", "/runs/"),
        ("https://evil.example/", "/"),
        ("//evil.example/", "/"),
        ("/\\evil.example/", "/"),
        ("/%5Cevil.example/", "/"),
    ]
    for target, expected in cases:
        client = app.test_client()
        response = client.post(
            f"/login?next={target}",
            data={"name": name, "password": password, "csrf_token": csrf_token(client)},
        )
        assert response.headers["Location"] == expected


def test_logout_needs_csrf_and_ends_the_session(client: FlaskClient) -> None:
    assert client.get("/").status_code == 200
    assert client.post("/logout").status_code == 400
    assert client.get("/").status_code == 200
    assert client.post("/logout", data={"csrf_token": csrf_token(client, "/")}).status_code == 302
    assert client.get("/").status_code == 302


def test_login_attempts_are_rate_limited(app: Flask, core: Core, admin: tuple[str, str]) -> None:
    client = app.test_client()
    token = csrf_token(client)
    bad = {"name": "admin", "password": "wrong", "csrf_token": token}
    codes = [client.post("/login", data=bad).status_code for _ in range(11)]
    assert codes == [401] * 10 + [429]
    good = {"name": admin[0], "password": admin[1], "csrf_token": token}
    assert client.post("/login", data=good).status_code == 429


def test_users_and_tokens(core: Core, admin: tuple[str, str]) -> None:
    assert users.check_login(core, *admin)
    assert not users.check_login(core, "ghost", admin[1])
    with pytest.raises(Conflict):
        users.add_user(core, admin[0], "another password")
    with pytest.raises(UserError, match="too short"):
        users.add_user(core, "bob", "short")
    token = users.add_token(core, "ci")
    assert users.find_token(core, token).name == "ci"
    assert users.find_token(core, token + "x") is None


def test_the_app_refuses_to_start_without_a_secret_key(core: Core) -> None:
    from dataclasses import replace

    from batch.web import create_app

    with pytest.raises(RuntimeError, match="SECRET_KEY must be set"):
        create_app(replace(core.settings, secret_key=""))
