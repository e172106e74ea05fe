"""Admin pages: results."""

from __future__ import annotations

from flask import Blueprint

blueprint = Blueprint("results", __name__, url_prefix="/results")
