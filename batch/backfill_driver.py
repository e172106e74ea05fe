"""The backfill driver: the worker nodes' loop that tops up every running backfill.

One node at a time (the Redis lock ``batch:backfill-lock``) looks at the running backfills
every ``IDLE_INTERVAL_SECONDS``, and every ``ACTIVE_INTERVAL_SECONDS`` while any runs, and
advances each (``backfills.advance``): a run that ended is followed by the next one at once.
Everything a backfill needs is in SQL: a node killed mid-backfill loses nothing, another
takes the lock once it expires.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from batch.backfills import GOING, advance
from batch.constants import BACKFILL_LOCK_KEY
from batch.core import Core
from batch.models import Backfill
from batch.node_lock import LockedLoop, NodeLoopStep

#: How often the driver looks for running backfills, and tops them up while any runs.
IDLE_INTERVAL_SECONDS = 0.5
ACTIVE_INTERVAL_SECONDS = 0.05
#: The driver's lock outlives a stuck pass by this much before another node takes over.
DRIVER_LOCK_SECONDS = 10.0


def running_backfills(session: Session) -> list[int]:
    """The ids of the backfills still running (``ix_backfills_state``)."""
    return list(session.scalars(select(Backfill.id).where(Backfill.state == GOING)))


class BackfillDriver(LockedLoop):
    """Tops up every running backfill a few times a second, while this node holds the lock."""

    name = "backfill driver"

    def __init__(self, core: Core, celery: Celery) -> None:
        super().__init__(
            core.redis,
            BACKFILL_LOCK_KEY,
            timeout=DRIVER_LOCK_SECONDS,
            interval=IDLE_INTERVAL_SECONDS,
        )
        self.core, self.celery = core, celery

    def work(self) -> int:
        """Top up each running backfill; the runs sent. While any runs, the next pass comes
        soon: a run that ended is followed by the next one within ACTIVE_INTERVAL_SECONDS."""
        with self.core.reading() as session:
            ids = running_backfills(session)
        self.interval = ACTIVE_INTERVAL_SECONDS if ids else IDLE_INTERVAL_SECONDS
        return sum(advance(self.core, self.celery, backfill_id) for backfill_id in ids)


class BackfillStep(NodeLoopStep):
    """Worker bootstep: runs a BackfillDriver in a thread."""

    thread_name = "batch-backfill"

    def make_loop(self, worker: Any) -> BackfillDriver:
        from batch.celery_app import create_celery  # which adds this step to the worker

        # Its own app, core and connections: the pool's processes never share them.
        celery = create_celery(worker.app.batch_core.settings)
        return BackfillDriver(celery.batch_core, celery)
