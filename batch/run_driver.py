"""The run driver: the worker nodes' loop that starts the runs waiting for their turn.

- **Backfills** (batch/backfills.py): each running backfill is topped up (``advance``) to its
  ``max_running``.
- **Buffered fires** (``overlap = "buffer_one"``, batch/overlap.py): a waiting fire is released
  (queued) in the transaction that ends its schedule's run; its start message is sent here.
  A waiting fire whose schedule has nothing going any more is released here too.

One node at a time (the Redis lock ``batch:run-driver-lock``) looks every
``IDLE_INTERVAL_SECONDS``, and every ``ACTIVE_INTERVAL_SECONDS`` while a backfill runs: a run
that ended is followed by the next at once. Everything it works from is in SQL: a node killed
mid-way loses nothing, another takes the lock once it expires.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session

from batch import runs
from batch.backfills import GOING, advance
from batch.constants import RUN_DRIVER_LOCK_KEY
from batch.core import Core
from batch.models import QUEUED, WAITING, Backfill, Run, Schedule
from batch.node_lock import LockedLoop, NodeLoopStep
from batch.overlap import BUFFER_ONE
from batch.run_ends import release_waiting

#: How often the driver looks, and how often while a backfill runs.
IDLE_INTERVAL_SECONDS = 0.5
ACTIVE_INTERVAL_SECONDS = 0.05
#: Released fires whose start the driver sends per look, at most.
RELEASED_PER_LOOK = 100
#: The driver's lock outlives a stuck pass by this much before another node takes over.
DRIVER_LOCK_SECONDS = 10.0


def start_released(core: Core, celery: Celery) -> int:
    """The run driver's part for buffered fires: release the waiting fires whose schedule has
    nothing going any more (its run ended some other way), then send the start of each
    released fire of a buffer_one schedule with no start sent yet; how many were sent."""
    with core.reading() as session:
        waiting = session.scalars(
            select(Run.schedule_name).where(Run.status == WAITING).distinct()
        ).all()
    if waiting:
        with core.transaction() as session:
            for schedule in waiting:
                if schedule is not None:
                    release_waiting(session, schedule)
    buffered = select(Schedule.name).where(Schedule.overlap == BUFFER_ONE)
    with core.reading() as session:
        released = session.scalars(
            select(Run)
            .where(
                Run.status == QUEUED,
                Run.sent_at.is_(None),
                Run.backfill_id.is_(None),
                Run.schedule_name.in_(buffered),
            )
            .order_by(Run.created_at)
            .limit(RELEASED_PER_LOOK)
        ).all()
    return sum(runs.send_start_again(core, celery, run) for run in released)


def running_backfills(session: Session) -> list[int]:
    """The ids of the backfills still running (``ix_backfills_state``)."""
    return list(session.scalars(select(Backfill.id).where(Backfill.state == GOING)))


class RunDriver(LockedLoop):
    """Starts the runs whose turn came, while this node holds the lock."""

    name = "run driver"

    def __init__(self, core: Core, celery: Celery) -> None:
        super().__init__(
            core.redis,
            RUN_DRIVER_LOCK_KEY,
            timeout=DRIVER_LOCK_SECONDS,
            interval=IDLE_INTERVAL_SECONDS,
        )
        self.core, self.celery = core, celery

    def work(self) -> int:
        """Send the released fires, top up each running backfill; the runs sent."""
        sent = start_released(self.core, self.celery)
        with self.core.reading() as session:
            ids = running_backfills(session)
        self.interval = ACTIVE_INTERVAL_SECONDS if ids else IDLE_INTERVAL_SECONDS
        return sent + sum(advance(self.core, self.celery, backfill_id) for backfill_id in ids)


class RunDriverStep(NodeLoopStep):
    """Worker bootstep: runs a RunDriver in a thread."""

    thread_name = "batch-driver"

    def make_loop(self, worker: Any) -> RunDriver:
        from batch.celery_app import create_celery  # which adds this step to the worker

        # Its own app, core and connections: the pool's processes never share them.
        celery = create_celery(worker.app.batch_core.settings)
        return RunDriver(celery.batch_core, celery)
