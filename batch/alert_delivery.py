"""Alert delivery: each alert raised or resolved, sent to every webhook and e-mail address.

Raising or resolving an alert records an event in the same transaction (batch/alerts.py):
the outbox. A deliverer thread on every worker node (one at a time, by a Redis lock) turns
each new event into one delivery per configured target and sends the deliveries due:

- a webhook gets a JSON POST, signed: ``X-Batch-Signature: sha256=<hex>`` is the HMAC-SHA256,
  keyed with ``BATCH_ALERT_SECRET``, of ``<X-Batch-Timestamp>.<body>``;
- an e-mail address gets a plain-text mail through the SMTP settings.

A target that fails (a refused connection, a timeout, a status other than 2xx) is tried
again after 1 s, 2 s, 4 s ... (at most ``MAX_BACKOFF``) until ``BATCH_ALERT_RETRY_HOURS`` have
passed, then marked ``failed``. A delivery is marked delivered only after the target took
it, so a deliverer that dies between the two sends it again: delivery is at least once, and
``X-Batch-Alert-Id`` (the same on every attempt) lets a receiver drop what it has seen.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from batch.alerts import RESOLVED
from batch.constants import ALERT_DELIVERY_LOCK_KEY
from batch.core import Core
from batch.db import insert_ignoring_duplicates, utcnow
from batch.models import Alert, AlertDelivery, AlertEvent
from batch.node_lock import LockedLoop, NodeLoopStep
from batch.settings import Settings, shown_url

log = logging.getLogger(__name__)

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
#: Seconds between the deliverer's passes.
INTERVAL_SECONDS = 1.0
#: Events turned into deliveries, and deliveries sent, per pass.
BATCH = 50
#: How long one webhook request or SMTP conversation may take.
TIMEOUT_SECONDS = 10
MAX_BACKOFF = timedelta(minutes=5)
#: The lock's timeout; a pass stops sending well before it (``PASS_SECONDS``).
LOCK_SECONDS = 60
PASS_SECONDS = 30
#: The longest error kept with a delivery.
ERROR_LENGTH = 500
MAILTO = "mailto:"
USER_AGENT = "batch-alerts/1"


def targets(settings: Settings) -> list[str]:
    """Every configured target: the webhook URLs, then ``mailto:<address>``."""
    return [*settings.alert_webhooks, *(MAILTO + address for address in settings.alert_emails)]


def payload(alert: Alert, event: AlertEvent) -> dict[str, Any]:
    """What a webhook receives (and an e-mail tells): the event and the alert as it was then
    (a ``raised`` event sent late does not tell of the resolution; its own event does)."""
    resolved = event.event == RESOLVED
    return {
        "id": f"{alert.id}#{event.event}",
        "event": event.event,
        "at": event.at.isoformat(),
        "alert": {
            "id": alert.id,
            "kind": alert.kind,
            "schedule": alert.schedule_name,
            "run_id": alert.run_id,
            "message": alert.message,
            "raised_at": alert.raised_at.isoformat(),
            "resolved_at": alert.resolved_at.isoformat()
            if resolved and alert.resolved_at
            else None,
            "resolved_by": alert.resolved_by if resolved else None,
        },
    }


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" keyed with secret>``."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


@dataclass
class DeliveryResult:
    """What one pass did."""

    expanded: int = 0
    delivered: list[tuple[int, str]] = field(default_factory=list)
    retried: list[tuple[int, str]] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)


def deliver(core: Core, *, now: datetime | None = None) -> DeliveryResult:
    """One pass: new events into deliveries, then the deliveries due sent."""
    now = now or utcnow()
    result = DeliveryResult()
    with core.transaction() as session:
        result.expanded = _expand(
            session, targets(core.settings), now, core.settings.alert_retry_hours
        )
    with core.reading() as session:
        due = session.execute(
            select(AlertDelivery, AlertEvent, Alert)
            .join(AlertEvent, AlertEvent.id == AlertDelivery.event_id)
            .join(Alert, Alert.id == AlertEvent.alert_id)
            .where(AlertDelivery.state == PENDING, AlertDelivery.next_attempt_at <= now)
            .order_by(AlertDelivery.next_attempt_at)
            .limit(BATCH)
        ).all()
        session.expunge_all()
    stop_at = time.monotonic() + PASS_SECONDS
    for delivery, event, alert in due:
        if time.monotonic() > stop_at:
            break  # the rest in the next pass, under a renewed lock
        key = (delivery.event_id, delivery.target)
        error = _send(core.settings, delivery.target, payload(alert, event))
        outcome = _record(core, delivery, event, error, now)
        getattr(result, outcome).append(key)
    return result


def _expand(session: Session, configured: list[str], now: datetime, retry_hours: int) -> int:
    events = list(
        session.scalars(
            select(AlertEvent)
            .where(AlertEvent.expanded_at.is_(None))
            .order_by(AlertEvent.id)
            .limit(BATCH)
        )
    )
    stale = now - timedelta(hours=retry_hours)
    for event in events:
        # Older than the retries would last (no target was configured then): not sent.
        for target in configured if event.at > stale else []:
            values = {"event_id": event.id, "target": target, "state": PENDING}
            insert_ignoring_duplicates(
                session, AlertDelivery, values | {"attempts": 0, "next_attempt_at": now}
            )
        event.expanded_at = now
    return len(events)


def _send(settings: Settings, target: str, body: dict[str, Any]) -> str | None:
    """Send ``body`` to ``target``; None when it was taken, else why not."""
    try:
        if target.startswith(MAILTO):
            _send_mail(settings, target.removeprefix(MAILTO), body)
        else:
            _post(settings, target, body)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} {exc.reason}"
    except urllib.error.URLError as exc:
        return f"not reached: {exc.reason}"
    except (OSError, smtplib.SMTPException, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _post(settings: Settings, url: str, body: dict[str, Any]) -> None:
    data = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    timestamp = str(int(time.time()))
    request = urllib.request.Request(
        url,
        data=data,
        method="POST",
        headers={
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Batch-Alert-Id": body["id"],
            "X-Batch-Timestamp": timestamp,
            "X-Batch-Signature": signature(settings.alert_secret, timestamp, data),
        },
    )
    # urllib raises HTTPError for any status it does not follow; a redirect of a POST too.
    with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS) as response:
        response.read()


def _send_mail(settings: Settings, address: str, body: dict[str, Any]) -> None:
    alert = body["alert"]
    message = EmailMessage()
    verb = "Resolved" if body["event"] == "resolved" else "Alert"
    message["Subject"] = f"[batch] {verb}: {alert['message'][:150]}"
    message["From"] = settings.smtp_from
    message["To"] = address
    message["X-Batch-Alert-Id"] = body["id"]
    lines = [f"{key}: {value}" for key, value in alert.items() if value is not None]
    message.set_content(f"{verb} ({body['event']} at {body['at']})\n\n" + "\n".join(lines))
    with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=TIMEOUT_SECONDS) as smtp:
        if settings.smtp_starttls:
            smtp.starttls()
        if settings.smtp_user:
            smtp.login(settings.smtp_user, settings.smtp_password)
        smtp.send_message(message)


def _record(
    core: Core, delivery: AlertDelivery, event: AlertEvent, error: str | None, now: datetime
) -> str:
    """Store what the attempt (of the pass at ``now``) did; which of DeliveryResult's lists
    it belongs to."""
    attempts = delivery.attempts + 1
    values: dict[str, Any] = {"attempts": attempts}
    shown = _shown_target(delivery.target)
    if error is None:
        values |= {"state": DELIVERED, "delivered_at": now, "last_error": None}
        outcome = "delivered"
    elif now - event.at >= timedelta(hours=core.settings.alert_retry_hours):
        values |= {"state": FAILED, "last_error": error[:ERROR_LENGTH]}
        log.warning("alert %s: not delivered to %s, given up: %s", event.alert_id, shown, error)
        outcome = "failed"
    else:
        backoff = min(timedelta(seconds=2 ** (attempts - 1)), MAX_BACKOFF)
        values |= {"next_attempt_at": now + backoff, "last_error": error[:ERROR_LENGTH]}
        log.warning(
            "alert %s: not delivered to %s (attempt %s): %s; again in %ss",
            event.alert_id, shown, attempts, error, int(backoff.total_seconds()),
        )  # fmt: skip
        outcome = "retried"
    with core.transaction() as session:
        session.execute(
            update(AlertDelivery)
            .where(
                AlertDelivery.event_id == delivery.event_id,
                AlertDelivery.target == delivery.target,
            )
            .values(**values)
        )
    return outcome


def _shown_target(target: str) -> str:
    """A target as logs show it: a webhook URL's path may hold a token."""
    return target if target.startswith(MAILTO) else shown_url(target)


def delivery_states(session: Session, alert_ids: list[str]) -> dict[str, str]:
    """How each alert went out to the targets, in words: ``delivered``, ``1 pending``,
    ``1 failed: <its last error>`` (joined by "; "); an alert with no delivery (no target
    configured) is absent."""
    rows = session.execute(
        select(
            AlertEvent.alert_id,
            AlertDelivery.state,
            func.count(),
            func.max(AlertDelivery.last_error),
        )
        .join(AlertDelivery, AlertDelivery.event_id == AlertEvent.id)
        .where(AlertEvent.alert_id.in_(alert_ids))
        .group_by(AlertEvent.alert_id, AlertDelivery.state)
    )
    states: dict[str, dict[str, tuple[int, str | None]]] = {}
    for alert_id, state, count, error in rows:
        states.setdefault(alert_id, {})[state] = (count, error)
    return {alert_id: _in_words(by_state) for alert_id, by_state in states.items()}


def _in_words(by_state: dict[str, tuple[int, str | None]]) -> str:
    words = []
    if FAILED in by_state:
        count, error = by_state[FAILED]
        words.append(f"{count} failed: {error or 'no error recorded'}")
    if PENDING in by_state:
        count, error = by_state[PENDING]
        words.append(f"{count} pending" + (f" (last: {error})" if error else ""))
    return "; ".join(words) or DELIVERED


class Deliverer(LockedLoop):
    """The delivery loop of one worker node: one pass a second while it holds the lock."""

    name = "alert delivery"

    def __init__(self, core: Core) -> None:
        super().__init__(
            core.redis, ALERT_DELIVERY_LOCK_KEY, timeout=LOCK_SECONDS, interval=INTERVAL_SECONDS
        )
        self.core = core

    def run_once(self) -> DeliveryResult | None:
        """One pass if this node holds the lock; None when another node delivers."""
        result: DeliveryResult | None = super().run_once()
        return result

    def work(self) -> DeliveryResult:
        """Deliver what is due."""
        return deliver(self.core)


class AlertDeliveryStep(NodeLoopStep):
    """Worker bootstep: runs a Deliverer in a thread when any target is configured."""

    thread_name = "batch-alerts"
    join_seconds = TIMEOUT_SECONDS + 5

    def make_loop(self, worker: Any) -> Deliverer | None:
        settings = worker.app.batch_core.settings
        # Its own core and connections: the pool's processes never share them.
        return Deliverer(Core(settings)) if targets(settings) else None
