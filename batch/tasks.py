"""Celery tasks: thin wrappers that hand each message to the run engine."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import redis.exceptions
import sqlalchemy.exc
from billiard.einfo import ExceptionInfo, ExceptionWithTraceback
from celery import Task, shared_task
from celery.exceptions import WorkerLostError
from celery.worker.request import Request
from kombu.exceptions import OperationalError as BrokerOperationalError

from batch import catch_up, retries, runs
from batch.constants import (
    SENT_AT_HEADER,
    TASK_FAIL_RUN,
    TASK_FINISH_RUN,
    TASK_LAUNCH_CHUNKS,
    TASK_RUN_CHUNK,
    TASK_START_RUN,
)
from batch.core import Core

log = logging.getLogger(__name__)

#: Errors that go away by themselves: a busy or restarting database, broker or Redis.
TRANSIENT_ERRORS = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    BrokerOperationalError,
)
RETRY_POLICY: dict[str, Any] = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 1,
    "retry_backoff_max": 60,
    "retry_jitter": True,
    "max_retries": 5,
}


def _core(task: Task) -> Core:
    return task.app.batch_core


class RedeliveredRequest(Request):
    """The request of an ``acks_late`` + ``reject_on_worker_lost`` task, logged honestly.

    When the pool process running it dies (``kill -9``, the OOM killer), Celery 5.7 requeues
    the message and then logs "Task handler raised error: WorkerLostError" at ERROR with a
    traceback of billiard's internals, as if the task had failed. It has not: it will be
    delivered again. That case is one WARNING line here instead.
    """

    requeued = False

    def reject(self, requeue: bool = False) -> None:
        """Reject the message, remembering whether it went back to its queue."""
        self.requeued = requeue and not self.acknowledged
        super().reject(requeue=requeue)

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        """Celery's handling, with a lost worker process logged as what it is."""
        exc = exc_info.exception
        if isinstance(exc, ExceptionWithTraceback):
            exc = exc.exc
        task = self.task
        if not (
            isinstance(exc, WorkerLostError)
            and task.acks_late
            and task.reject_on_worker_lost
            and not task.retry_on_worker_lost
        ):
            super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
            return
        # return_ok only silences the closing "Task handler raised error" line: Celery still
        # requeues the message, or acknowledges it when its success was stored first (and
        # says so itself).
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=True)
        if self.requeued:
            log.warning(
                "Task %s[%s] lost its worker process (%s): the message is back in its queue"
                " and will be delivered again",
                self.name, self.id, exc,
            )  # fmt: skip


# Acknowledged after it ran: a start taken by a worker process that dies is delivered again
# (claiming a run is idempotent), not lost with the process.
@shared_task(
    name=TASK_START_RUN,
    bind=True,
    ignore_result=True,
    acks_late=True,
    reject_on_worker_lost=True,
    Request=RedeliveredRequest,
    **RETRY_POLICY,
)
def start_run(
    self: Task,
    job: str,
    params: dict[str, Any],
    trigger: str,
    run_id: str | None = None,
    schedule: str | None = None,
    scheduled_for: str | None = None,
    overlap: str = "allow",
    deadline_seconds: int | None = None,
) -> None:
    """Create or claim the run, plan it and launch its chord of chunks."""
    fire = None
    if schedule is not None and scheduled_for is not None:
        fire = runs.Fire(
            schedule=schedule,
            scheduled_for=datetime.fromisoformat(scheduled_for),
            overlap=overlap,
            deadline_seconds=deadline_seconds,
            sent_at=_sent_at(self),
        )
    delivery = self.request.delivery_info or {}
    started = runs.start_run(
        _core(self),
        self.app,
        job=job,
        params=params,
        trigger=trigger,
        run_id=run_id,
        fire=fire,
        queue=delivery.get("routing_key") or _core(self).settings.default_queue,
        priority=delivery.get("priority"),
    )
    if fire is not None and started is not None:
        catch_up.catch_up(_core(self), self.app, fire)


def _sent_at(task: Task) -> datetime | None:
    """When the message was sent, from the header beat (or the sweep) put in it."""
    raw = task.request.get(SENT_AT_HEADER)
    try:
        return datetime.fromisoformat(raw) if isinstance(raw, str) else None
    except ValueError:
        return None


@shared_task(
    name=TASK_RUN_CHUNK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    Request=RedeliveredRequest,
    **RETRY_POLICY,
)
def run_chunk(
    self: Task, run_id: str, job: str, index: int, spec: dict[str, Any], params: dict[str, Any]
) -> bool:
    """Process one chunk and store its partial (a repeat delivery changes nothing)."""
    return runs.run_chunk(_core(self), run_id, job, index, spec, params, node=self.request.hostname)


@shared_task(name=TASK_FINISH_RUN, bind=True, ignore_result=True, **RETRY_POLICY)
def finish_run(self: Task, _chunk_results: list[Any], run_id: str) -> None:
    """Chord callback: aggregate the stored partials into the run's result."""
    try:
        runs.finish_run(_core(self), run_id)
    except runs.MissingChunks as exc:
        raise self.retry(exc=exc, countdown=1, max_retries=None) from None


@shared_task(name=TASK_FAIL_RUN, bind=True, ignore_result=True, **RETRY_POLICY)
def fail_run(self: Task, failed_task_id: str, run_id: str) -> None:
    """Chord error callback: mark the run failed with the failing chunks' errors."""
    runs.fail_run(_core(self), run_id, f"a chunk failed (task {failed_task_id})")


@shared_task(name=TASK_LAUNCH_CHUNKS, bind=True, ignore_result=True, **RETRY_POLICY)
def launch_chunks(self: Task, run_id: str, indexes: list[int]) -> None:
    """Send the chord of the chunks a retry reopened (see batch.retries)."""
    retries.launch_pending_chunks(_core(self), self.app, run_id, indexes)
