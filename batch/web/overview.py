"""The front page: schedules due next, runs going now, recent failures, queues, workers."""

from __future__ import annotations

from flask import Blueprint, render_template

from batch import queries
from batch.web import current_celery, current_core

blueprint = Blueprint("overview", __name__)

SHOWN = 10


@blueprint.get("/")
def index() -> str:
    """The overview page."""
    data = queries.overview(current_core(), current_celery(), SHOWN)
    return render_template("overview.html", data=data)
