"""``GET /metrics``: the Prometheus text format, behind an API bearer token (batch.metrics)."""

from __future__ import annotations

import gzip

from flask import Blueprint, Response, request
from prometheus_client import CONTENT_TYPE_LATEST

from batch import metrics
from batch.web import current_celery, current_core

blueprint = Blueprint("metrics", __name__)

#: The path Prometheus scrapes; auth.authenticate asks it for a bearer token, like /api/.
METRICS_PATH = "/metrics"


@blueprint.get(METRICS_PATH)
def scrape() -> Response:
    """Every metric, read at this moment from SQL and Redis."""
    body = metrics.render(current_core(), current_celery())
    response = Response(body, mimetype=None, content_type=CONTENT_TYPE_LATEST)
    response.vary.add("Accept-Encoding")
    # Prometheus asks for gzip: at 10,000 schedules the text is ~40 MB, gzipped ~1 MB.
    if "gzip" in request.accept_encodings:
        response.set_data(gzip.compress(body, compresslevel=6))
        response.headers["Content-Encoding"] = "gzip"
    return response
