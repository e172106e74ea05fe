"""The web process rides out Redis killed and started again, or hung: no 500, no restart."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from batch import users
from batch.celery_app import close_celery
from batch.core import REDIS_TIMEOUT_SECONDS, Core
from batch.lab import Lab
from tests.conftest import ADMIN, ROOT
from tests.test_queries import add_run
from tests.web.conftest import csrf_token
from tests.web.test_overview import section


@pytest.fixture
def lab(core: Core, tmp_path: Path) -> Iterator[Lab]:
    lab = Lab.open(core.settings, tmp_path, environ={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        yield lab
    finally:
        lab.close()


def test_the_admin_and_the_api_ride_out_a_redis_restart(lab: Lab, admin: tuple[str, str]) -> None:
    from batch.web import create_app

    app = create_app(lab.settings)
    client: FlaskClient = app.test_client()
    login = {"name": ADMIN[0], "password": ADMIN[1], "csrf_token": csrf_token(client)}
    assert client.post("/login", data=login).status_code == 302
    api = app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {users.add_token(lab.core, 'outage')}"
    add_run(lab.core, "outage-run")
    submit = "/api/jobs/tests.sum_squares/runs"
    try:
        assert client.get("/").status_code == 200
        lab.kill_redis()
        # What SQL holds still answers; what needs Redis says so; nothing is a 500.
        assert client.get("/runs/outage-run").status_code == 200
        assert api.get("/api/runs/outage-run").status_code == 200
        down = client.get("/")
        assert down.status_code == 200
        assert "Redis did not answer." in section(down.get_data(as_text=True), "due")
        # On a Redis broker the run cannot be queued; RabbitMQ takes it without Redis.
        on_redis = lab.settings.effective_broker_url == lab.settings.redis_url
        assert api.post(submit, json={"params": {"n": 10}}).status_code == (
            503 if on_redis else 202
        )
        lab.start_redis()
        # No restart of the web process: the next requests reach the new Redis.
        again = client.get("/")
        assert again.status_code == 200
        assert "did not answer" not in again.get_data(as_text=True)
        assert api.post(submit, json={"params": {"n": 10}}).status_code == 202
    finally:
        close_celery(app.extensions["batch_celery"])


def test_the_admin_answers_while_redis_hangs(lab: Lab, admin: tuple[str, str]) -> None:
    from batch.web import create_app

    app = create_app(lab.settings)
    client: FlaskClient = app.test_client()
    login = {"name": ADMIN[0], "password": ADMIN[1], "csrf_token": csrf_token(client)}
    assert client.post("/login", data=login).status_code == 302
    redis_server = lab.redis_server.process
    try:
        assert client.get("/").status_code == 200
        redis_server.send_signal(signal.SIGSTOP)  # it keeps its port and answers nothing
        started = time.monotonic()
        hung = client.get("/")
        waited = time.monotonic() - started
        assert hung.status_code == 200
        assert "Redis did not answer." in section(hung.get_data(as_text=True), "due")
        assert waited < 2 * REDIS_TIMEOUT_SECONDS + 2, waited
        redis_server.send_signal(signal.SIGCONT)
        assert "did not answer" not in client.get("/").get_data(as_text=True)
    finally:
        redis_server.send_signal(signal.SIGCONT)
        close_celery(app.extensions["batch_celery"])
