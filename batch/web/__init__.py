"""The Flask app factory: a thin face over the core (admin pages, JSON API, health check)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from celery import Celery
from flask import Flask, current_app, jsonify
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import text
from werkzeug.middleware.proxy_fix import ProxyFix

from batch.celery_app import create_celery
from batch.core import Core
from batch.settings import Settings

MIN_SECRET_KEY_LENGTH = 16
MAX_REQUEST_BYTES = 1024 * 1024
#: Arrays and objects inside one another, the outermost counted: far more than any params
#: need, far fewer than overflow the stack of whatever handles the value next.
MAX_JSON_DEPTH = 32


def create_app(settings: Settings | None = None) -> Flask:
    """Build the web app; reads the environment when no settings are given."""
    settings = settings or Settings.from_env()
    if len(settings.secret_key) < MIN_SECRET_KEY_LENGTH:
        raise RuntimeError(
            f"SECRET_KEY must be set to a random string of at least {MIN_SECRET_KEY_LENGTH}"
            " characters (batch dev makes one in instance/secret-key)"
        )
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        WTF_CSRF_TIME_LIMIT=None,
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
    )
    if settings.proxy_count:
        # Only the hops we run are believed: the client address and scheme they saw.
        app.wsgi_app = ProxyFix(
            app.wsgi_app, x_for=settings.proxy_count, x_proto=settings.proxy_count
        )
    core = Core(settings)
    app.extensions["batch_core"] = core
    app.extensions["batch_celery"] = create_celery(settings, core)

    from batch.web import api, auth, backfills, metrics, overview, results, runs, schedules
    from batch.web.headers import add_security_headers

    app.session_interface = auth.CheckedSessionInterface()
    csrf = CSRFProtect(app)
    csrf.exempt(api.blueprint)  # token-authenticated, never cookie-authenticated
    app.before_request(auth.authenticate)
    app.after_request(auth.record_use)
    app.after_request(add_security_headers)
    for module in (auth, overview, schedules, backfills, runs, results, api, metrics):
        app.register_blueprint(module.blueprint)
    app.add_url_rule("/healthz", "healthz", healthz)
    app.jinja_env.globals["has_endpoint"] = lambda endpoint: endpoint in app.view_functions
    return app


def load_json(raw: str | bytes) -> Any:
    """Parse JSON from a request; ValueError (with a message for people) if it is not usable.

    Besides malformed JSON this refuses ``NaN`` and ``Infinity``, numbers too large for a
    float (``1e400``), and nesting deeper than MAX_JSON_DEPTH: none of them can be stored
    as JSON in every database, and a deep value overflows the stack of code that recurses.
    """
    too_deep = f"it is nested deeper than {MAX_JSON_DEPTH} levels"
    try:
        value = json.loads(raw, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(too_deep) from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise ValueError(too_deep)
    return value


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is too large")
    return number


def _depth_exceeds(value: Any, limit: int) -> bool:
    # A loop, not recursion: the value may be as deep as the parser allowed.
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            item = list(item.values())
        if isinstance(item, list):
            if depth > limit:
                return True
            pending.extend((child, depth + 1) for child in item)
    return False


def current_core() -> Core:
    """The core of the app handling this request."""
    return current_app.extensions["batch_core"]


def current_celery() -> Celery:
    """The Celery app (client side) of the app handling this request."""
    return current_app.extensions["batch_celery"]


def healthz() -> tuple[Any, int]:
    """Open liveness check: the database and Redis answer."""
    core = current_core()
    checks = {"database": _check_database(core), "redis": _probe(core.redis.ping)}
    healthy = all(value == "ok" for value in checks.values())
    return jsonify(status="ok" if healthy else "degraded", checks=checks), (200 if healthy else 503)


def _probe(check: Callable[[], object]) -> str:
    try:
        check()
    except Exception as exc:  # reported, not raised: this is a health probe
        return f"error: {type(exc).__name__}"
    return "ok"


def _check_database(core: Core) -> str:
    def select_one() -> None:
        with core.read_engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    return _probe(select_one)
