"""The front page: open alerts, schedules due next, runs going now, recent failures, the
scheduler's health, queues, workers."""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, render_template

from batch import queries
from batch.db import utcnow
from batch.web import current_celery, current_core

blueprint = Blueprint("overview", __name__)

SHOWN = 10


@blueprint.get("/")
def index() -> str:
    """The overview page."""
    core = current_core()
    data = queries.overview(core, current_celery(), SHOWN)
    silent = timedelta(seconds=core.settings.beat_silent_seconds)
    ticked = data.beat.ticked_at if data.beat else None
    beat_silent = ticked is None or utcnow() - ticked > silent
    return render_template("overview.html", data=data, beat_silent=beat_silent)
