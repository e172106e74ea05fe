"""Plain RedBeat, configured as its README does: the baseline beat of ``bench/beat.py``.

Start it with ``celery -A bench.redbeat_app beat --scheduler redbeat.RedBeatScheduler`` and
``BENCH_REDIS_URL`` set. The only addition to RedBeat is a ``bench_sent_at`` header (the send
time, epoch seconds) on each message: RedBeat's interval entries count their next fire from
their last send, so the benchmark needs the send time to know the fire time of the next one.
"""

from __future__ import annotations

import os
import time
from typing import Any

from celery import Celery
from celery.signals import before_task_publish

#: Distinct from batch's prefix, so neither system can read the other's entries.
KEY_PREFIX = "bench:redbeat:"
SENT_AT_HEADER = "bench_sent_at"


def create_app(redis_url: str, max_interval: float = 0) -> Celery:
    """A Celery app with RedBeat on ``redis_url``; ``max_interval`` 0 keeps Celery's default."""
    app = Celery("bench_redbeat")
    app.conf.update(
        broker_url=redis_url,
        redbeat_redis_url=redis_url,
        redbeat_key_prefix=KEY_PREFIX,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
    )
    if max_interval:
        app.conf.beat_max_loop_interval = max_interval
    return app


@before_task_publish.connect
def _stamp_sent_at(headers: dict[str, Any] | None = None, **_kwargs: Any) -> None:
    if headers is not None:
        headers[SENT_AT_HEADER] = time.time()


if "BENCH_REDIS_URL" in os.environ:  # under ``celery -A``; importing it elsewhere builds nothing
    app = create_app(
        os.environ["BENCH_REDIS_URL"], float(os.environ.get("BENCH_MAX_INTERVAL", "0"))
    )
