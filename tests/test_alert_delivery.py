"""Alert delivery to a real HTTP receiver and a real SMTP server, both started by the test.

A webhook that fails is tried again with backoff, each attempt with the same id and a valid
signature; a receiver down for longer than the retries last is given up, visibly; a real
worker node delivers the alert of a failed run by itself; e-mail goes through SMTP.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from batch import alerts, runs
from batch.alert_delivery import deliver, delivery_states
from batch.core import Core
from batch.db import utcnow
from batch.lab import Lab, wait_until
from batch.models import Alert, AlertDelivery, Schedule
from batch.settings import Settings
from tests.conftest import ROOT
from tests.test_queries import SUMS

SECRET = "a-shared-secret-for-tests"
TOKEN_PATH = "/hooks/T0KEN-in-the-path"
#: The default queue of the worker-node test: the suite's own worker does not read it.
OWN_QUEUE = "alert-delivery"


class Receiver:
    """An HTTP server that records each POST and answers with the next scripted status."""

    def __init__(self, statuses: list[int] | None = None) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers.items()), body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}{TOKEN_PATH}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def with_targets(core: Core) -> Iterator[Callable[..., Core]]:
    """Makes cores on the test's database with alert targets; closes them after the test."""
    made: list[Core] = []

    def make(**changes: Any) -> Core:
        made.append(Core(dataclasses.replace(core.settings, alert_secret=SECRET, **changes)))
        return made[-1]

    yield make
    for each in made:
        each.dispose()


def raise_one(core: Core, cause: str = "run_failed:hourly:start") -> None:
    with core.transaction() as session:
        alerts.raise_alert(
            session, cause, "run_failed", "a run of hourly failed: boom", schedule="hourly"
        )


def shown(core: Core, alert_id: str = "run_failed:hourly:start") -> str:
    """How the admin's alert tables say the alert went out."""
    with core.reading() as session:
        return delivery_states(session, [alert_id])[alert_id]


def deliveries(core: Core) -> list[tuple[str, str, int, str | None]]:
    with core.reading() as session:
        rows = session.scalars(select(AlertDelivery).order_by(AlertDelivery.event_id))
        return [(row.target, row.state, row.attempts, row.last_error) for row in rows]


def signed(headers: dict[str, str], body: bytes) -> bool:
    expected = hmac.new(
        SECRET.encode(), headers["X-Batch-Timestamp"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(headers["X-Batch-Signature"], f"sha256={expected}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_webhook_that_fails_is_retried_with_the_same_id_until_it_takes_it(
    with_targets: Callable[..., Core], core: Core, receiver: Receiver
) -> None:
    delivering = with_targets(alert_webhooks=(receiver.url,))
    receiver.statuses = [500, 503]
    raise_one(core)
    first = deliver(delivering)
    assert (first.expanded, len(first.retried)) == (1, 1)
    assert shown(core).startswith("1 pending (last: ")
    assert deliver(delivering).retried == []  # not due again for 1 s
    later = utcnow() + timedelta(seconds=1.5)
    assert len(deliver(delivering, now=later).retried) == 1  # the second waits 2 s
    assert len(deliver(delivering, now=later + timedelta(seconds=3)).delivered) == 1
    assert deliveries(core) == [(receiver.url, "delivered", 3, None)]
    assert shown(core) == "delivered"

    ids = {headers["X-Batch-Alert-Id"] for headers, _ in receiver.requests}
    assert ids == {"run_failed:hourly:start#raised"}
    assert all(signed(headers, body) for headers, body in receiver.requests)
    with core.reading() as session:
        alert = session.get_one(Alert, "run_failed:hourly:start")
    body = receiver.bodies()[-1]
    assert body["alert"] == {
        "id": "run_failed:hourly:start", "kind": "run_failed", "schedule": "hourly",
        "run_id": None, "message": "a run of hourly failed: boom",
        "raised_at": alert.raised_at.isoformat(), "resolved_at": None, "resolved_by": None,
    }  # fmt: skip
    assert (body["id"], body["event"]) == ("run_failed:hourly:start#raised", "raised")

    # Nothing is sent twice once taken; a body changed in transit fails the signature.
    assert deliver(delivering, now=later + timedelta(minutes=10)).delivered == []
    headers, raw = receiver.requests[-1]
    assert not signed(headers, raw.replace(b"boom", b"fine"))


def test_the_resolution_is_delivered_too(
    with_targets: Callable[..., Core], core: Core, receiver: Receiver, celery_app: Any
) -> None:
    from tests.web.test_schedules_pages import add_schedule

    add_schedule(core, celery_app)
    delivering = with_targets(alert_webhooks=(receiver.url,))
    raise_one(core)
    with core.reading() as session:
        schedule = session.get_one(Schedule, "hourly")
    run_id = runs.submit_run(core, celery_app, SUMS, {"n": 10}, trigger="test", schedule=schedule)
    with core.transaction() as session:
        alerts.run_finished(session, run_id, "hourly", "succeeded", None)
    deliver(delivering)
    assert [(body["id"], body["alert"]["resolved_by"]) for body in receiver.bodies()] == [
        ("run_failed:hourly:start#raised", None),
        ("run_failed:hourly:start#resolved", run_id),
    ]


def test_a_receiver_down_past_the_retry_hours_is_given_up_and_no_token_is_logged(
    with_targets: Callable[..., Core], core: Core, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nobody listens on it
    url = f"http://127.0.0.1:{port}{TOKEN_PATH}"
    delivering = with_targets(alert_webhooks=(url,), alert_retry_hours=1)
    raise_one(core)
    with caplog.at_level(logging.WARNING, logger="batch.alert_delivery"):
        assert len(deliver(delivering).retried) == 1
        gone = deliver(delivering, now=utcnow() + timedelta(hours=1, minutes=1))
    assert len(gone.failed) == 1
    [(target, state, attempts, error)] = deliveries(core)
    assert (target, state, attempts) == (url, "failed", 2)
    assert error is not None and error.startswith("not reached: ")
    assert shown(core) == f"1 failed: {error}" and "T0KEN" not in shown(core)
    assert f"http://127.0.0.1:{port}/..." in caplog.text
    assert "T0KEN" not in caplog.text
    assert "given up" in caplog.text


def test_an_event_from_before_any_target_was_configured_is_not_sent_late(
    with_targets: Callable[..., Core], core: Core, receiver: Receiver
) -> None:
    raise_one(core)
    later = utcnow() + timedelta(hours=25)
    result = deliver(with_targets(alert_webhooks=(receiver.url,)), now=later)
    assert (result.expanded, receiver.requests, deliveries(core)) == (1, [], [])


class Inbox:
    """aiosmtpd's handler: keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(envelope.content)
        return "250 OK"


def test_an_alert_is_mailed_through_smtp(with_targets: Callable[..., Core], core: Core) -> None:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        delivering = with_targets(
            alert_emails=("ops@example.com",), smtp_host="127.0.0.1", smtp_port=port,
            smtp_from="batch@example.com", smtp_starttls=False,
        )  # fmt: skip
        raise_one(core)
        assert len(deliver(delivering).delivered) == 1
    finally:
        controller.stop()
    [raw] = inbox.messages
    mail = message_from_bytes(raw)
    assert mail["To"] == "ops@example.com"
    assert mail["Subject"] == "[batch] Alert: a run of hourly failed: boom"
    assert mail["X-Batch-Alert-Id"] == "run_failed:hourly:start#raised"
    assert "kind: run_failed" in mail.get_payload()
    assert deliveries(core) == [("mailto:ops@example.com", "delivered", 1, None)]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        (
            {"alert_webhooks": ("https://hooks.example.com/T0KEN",)},
            "BATCH_ALERT_SECRET must be set when BATCH_ALERT_WEBHOOKS is",
        ),
        (
            {"alert_webhooks": ("ftp://hooks.example.com/T0KEN",), "alert_secret": "s"},
            "BATCH_ALERT_WEBHOOKS: not an http(s) URL: 'ftp://hooks.example.com/...'",
        ),
        (
            {"alert_emails": ("ops@example.com",)},
            "BATCH_SMTP_HOST and BATCH_SMTP_FROM must be set when BATCH_ALERT_EMAILS is",
        ),
        (
            {"alert_emails": ("ops",), "smtp_host": "h", "smtp_from": "b@h"},
            "BATCH_ALERT_EMAILS: not an e-mail address: 'ops'",
        ),
    ],
)
def test_bad_alert_settings_stop_the_process_at_start(changes: dict[str, Any], error: str) -> None:
    with pytest.raises(ValueError) as raised:
        Settings(**changes)
    assert str(raised.value).startswith(error)
    assert "T0KEN" not in str(raised.value)


def test_a_worker_node_delivers_a_failed_runs_alert_by_itself(
    core: Core, receiver: Receiver, tmp_path: Path
) -> None:
    receiver.statuses = [502]  # the first attempt fails: the node tries again
    lab = Lab.open(
        core.settings, tmp_path, environ={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        alert_webhooks=(receiver.url,), alert_secret=SECRET,
        queues=(OWN_QUEUE, "reports", "cleanups"),  # no other test's worker reads its first
    )  # fmt: skip
    try:
        from tests.web.test_schedules_pages import add_schedule

        add_schedule(lab.core, lab.celery)
        lab.start_node("alerts", queues=(OWN_QUEUE,))
        with lab.core.reading() as session:
            schedule = session.get_one(Schedule, "hourly")
        run_id = runs.submit_run(
            lab.core, lab.celery, SUMS, {"n": 400, "fail_chunk": 100}, trigger="test",
            schedule=schedule,
        )  # fmt: skip
        wait_until(lambda: len(receiver.requests) >= 2, timeout=30)
    finally:
        lab.close()
    assert [body["alert"]["run_id"] for body in receiver.bodies()] == [run_id, run_id]
    assert all(signed(headers, body) for headers, body in receiver.requests)
    assert deliveries(core) == [(receiver.url, "delivered", 2, None)]
