"""The Flask app factory: a thin face over the core (the admin pages arrive in a later step)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask, jsonify
from sqlalchemy import text

from batch.core import Core
from batch.settings import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the web app; reads the environment when no settings are given."""
    settings = settings or Settings.from_env()
    app = Flask(__name__)
    app.config["SECRET_KEY"] = settings.secret_key
    core = Core(settings)
    app.extensions["batch_core"] = core

    @app.get("/healthz")
    def healthz() -> tuple[Any, int]:
        """Open liveness check: the database and Redis answer."""
        checks = {"database": _check_database(core), "redis": _check_redis(core)}
        healthy = all(value == "ok" for value in checks.values())
        return jsonify(status="ok" if healthy else "degraded", checks=checks), (
            200 if healthy else 503
        )

    return app


def _probe(check: Callable[[], object]) -> str:
    try:
        check()
    except Exception as exc:  # reported, not raised: this is a health probe
        return f"error: {type(exc).__name__}"
    return "ok"


def _check_database(core: Core) -> str:
    def select_one() -> None:
        with core.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    return _probe(select_one)


def _check_redis(core: Core) -> str:
    return _probe(core.redis.ping)
