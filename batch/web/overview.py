"""The front page: schedules due next, runs going now, recent failures, queues, workers."""

from __future__ import annotations

from flask import Blueprint, render_template

blueprint = Blueprint("overview", __name__)


@blueprint.get("/")
def index() -> str:
    """The overview page."""
    return render_template("overview.html")
