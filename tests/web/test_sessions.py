"""Sessions that end, sign-in that goes nowhere else, and auth that never blocks."""

from __future__ import annotations

import pytest
from flask import Flask

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
