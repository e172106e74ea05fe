"""Every response carries the security headers: pages, the API, static files, errors."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from batch.web.headers import SECURITY_HEADERS

EXPECTED = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline';"
        " img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none';"
        " form-action 'self'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def test_the_headers_are_the_documented_ones() -> None:
    assert SECURITY_HEADERS == EXPECTED


@pytest.mark.parametrize(
    ("path", "status"),
    [("/", 200), ("/runs/", 200), ("/schedules/new", 200), ("/static/style.css", 200),
     ("/runs/no-such-run", 404), ("/healthz", 200)],
)  # fmt: skip
def test_pages_carry_the_security_headers(client: FlaskClient, path: str, status: int) -> None:
    response = client.get(path)
    response.close()  # a static file is streamed from its open file
    assert response.status_code == status
    assert {name: response.headers.get(name) for name in EXPECTED} == EXPECTED


def test_the_sign_in_page_and_the_api_carry_them_too(app: Flask, api: FlaskClient) -> None:
    for response in (
        app.test_client().get("/login"),
        app.test_client().get("/api/jobs"),  # 401 without a token
        api.get("/api/jobs"),
        api.post("/api/jobs/no.such/runs", json={}),
    ):
        assert {name: response.headers.get(name) for name in EXPECTED} == EXPECTED
