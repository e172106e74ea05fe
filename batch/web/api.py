"""The JSON API (bearer-token authenticated): jobs, runs and schedules."""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("api", __name__, url_prefix="/api")
