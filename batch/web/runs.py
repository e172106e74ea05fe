"""Admin pages: runs."""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("runs", __name__, url_prefix="/runs")
