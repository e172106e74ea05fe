"""Admin pages: schedules."""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("schedules", __name__, url_prefix="/schedules")
