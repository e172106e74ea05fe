"""Gunicorn settings for the web process (``--config python:batch.web.gunicorn_conf``)."""

from __future__ import annotations

import gc
from typing import Any

#: A young-generation collection every 50,000 allocations instead of 700: a page makes
#: tens of thousands of short-lived objects, and each early collection pauses a request.
GC_THRESHOLD = (50_000, 20, 20)


def post_worker_init(worker: Any) -> None:
    """Once the app is loaded: keep its long-lived objects out of every later collection."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLD)


#: The control socket (``gunicornc``) of this checkout, not one per user in ~/.gunicorn:
#: two checkouts on one host would otherwise fight over the same socket. Relative to the
#: working directory (the project directory under ``make run``), which keeps it short.
control_socket = "instance/gunicorn.ctl"
