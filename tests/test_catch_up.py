"""Catch-up: what becomes of the fires a schedule missed while beat was down, and resuming a
paused schedule with or without its missed fires.

The first tests send a fire's start message as beat sends it (its kwargs, and the header
that says when it was sent) to the suite's real worker; the last kills and restarts a real
beat.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy import select, update

from batch import backfills, catch_up, schedules
from batch.constants import SENT_AT_HEADER, TASK_START_RUN
from batch.core import Core
from batch.db import utcnow
from batch.exceptions import Conflict
from batch.lab import Lab, wait_until
from batch.models import Backfill, Run, Schedule
from batch.processes import start_beat, stop_process
from batch.runs import scheduled_run_id
from tests.conftest import counted_lab, own_database, wait_for_run
from tests.test_engine import expected_sum

MINUTE = timedelta(minutes=1)


def add(
    core: Core, celery: Celery, name: str, saved: datetime | None = None, **fields: Any
) -> None:
    """A schedule every minute, saved at ``saved`` (an hour ago): its fires since count."""
    data = {"name": name, "job": "tests.sum_squares", "params": {"n": 100}, "cron": "* * * * *"}
    spec = schedules.validate_schedule(core, {**data, **fields})
    schedules.save_schedule(core, celery, spec, actor="test", mode="create")
    saved = saved or utcnow() - timedelta(hours=1)
    with core.transaction() as session:
        session.execute(update(Schedule).where(Schedule.name == name).values(updated_at=saved))


def fire(celery: Celery, name: str, at: datetime, *, sent_late: timedelta) -> str:
    """Send the start of ``name``'s fire at ``at`` as beat would, ``sent_late`` after it."""
    celery.send_task(
        TASK_START_RUN,
        kwargs={"job": "tests.sum_squares", "params": {"n": 100}, "trigger": f"schedule:{name}",
                "schedule": name, "scheduled_for": at.isoformat()},
        queue="default",
        headers={SENT_AT_HEADER: (at + sent_late).isoformat()},
    )  # fmt: skip
    return scheduled_run_id(name, at)


def minute_ago(minutes: int) -> datetime:
    return utcnow().replace(second=0, microsecond=0) - minutes * MINUTE


def runs_of(core: Core, name: str) -> list[Run]:
    with core.reading() as session:
        return list(
            session.scalars(
                select(Run).where(Run.schedule_name == name).order_by(Run.scheduled_for)
            )
        )


def test_skip_skips_a_fire_sent_over_a_minute_late_and_runs_one_sent_on_time(
    core: Core, celery_app: Celery, worker
) -> None:
    now = minute_ago(0)
    add(core, celery_app, "skipper", catch_up="skip")
    late = wait_for_run(core, fire(celery_app, "skipper", now - 3 * MINUTE, sent_late=2 * MINUTE))
    assert (late.status, late.error) == (
        "skipped", "skipped: missed, sent 120s after its fire time (catch_up = skip)",
    )  # fmt: skip
    on_time = fire(celery_app, "skipper", now - 1 * MINUTE, sent_late=timedelta(seconds=1))
    run = wait_for_run(core, on_time)
    assert (run.status, run.result) == ("succeeded", {"sum": expected_sum(100)})
    # "latest" (the default) runs the fire however late beat sent it.
    add(core, celery_app, "latest")
    run = wait_for_run(core, fire(celery_app, "latest", now - 3 * MINUTE, sent_late=2 * MINUTE))
    assert run.status == "succeeded"
    assert [r.scheduled_for for r in runs_of(core, "latest")] == [now - 3 * MINUTE]


def test_each_backfills_the_newest_missed_fires_within_its_window(
    core: Core, celery_app: Celery, worker
) -> None:
    now = minute_ago(0)
    add(core, celery_app, "each", saved=now - 20 * MINUTE - timedelta(seconds=30),
        catch_up="each", catch_up_window_seconds=600, catch_up_max=4)  # fmt: skip
    # The first fire, 20 minutes ago, ran; beat then was down until a minute ago: 18 fires
    # missed, of which the window (10 minutes) and the max (4) keep the newest 4.
    wait_for_run(core, fire(celery_app, "each", now - 20 * MINUTE, sent_late=timedelta(0)))
    back = now - MINUTE
    wait_for_run(core, fire(celery_app, "each", back, sent_late=timedelta(seconds=50)))
    backfill = wait_until(lambda: _one_backfill(core), timeout=20)
    assert backfill.actor == "catch-up" and backfill.only == "missing"
    wait_until(lambda: _one_backfill(core).state == "done", timeout=60)
    made = runs_of(core, "each")
    assert [run.scheduled_for for run in made] == [
        now - 20 * MINUTE,
        *[back - k * MINUTE for k in (4, 3, 2, 1)],
        back,
    ]
    assert {(run.status, run.result["sum"]) for run in made} == {("succeeded", expected_sum(100))}
    # The next fire on time finds the one before it ran: no catch-up.
    wait_for_run(core, fire(celery_app, "each", now, sent_late=timedelta(0)))
    time.sleep(0.5)
    with core.reading() as session:
        assert len(session.scalars(select(Backfill)).all()) == 1


def _one_backfill(core: Core) -> Backfill | None:
    with core.reading() as session:
        found = session.scalars(select(Backfill)).all()
        assert len(found) <= 1
        if found:
            session.expunge(found[0])
        return found[0] if found else None


def test_resume_and_catch_up_runs_the_fires_missed_while_paused(
    core: Core, celery_app: Celery, worker
) -> None:
    now = minute_ago(0)
    add(core, celery_app, "paused", pause_after_failures=1)
    schedules.set_enabled(core, celery_app, "paused", False, actor="test")
    with core.transaction() as session:
        session.execute(
            update(Schedule)
            .where(Schedule.name == "paused")
            .values(disabled_at=now - 3 * MINUTE - timedelta(seconds=30))
        )
    backfill = catch_up.resume_and_catch_up(core, celery_app, "paused", actor="test")
    assert backfill is not None
    wait_until(lambda: backfills.get_backfill(core, backfill.id).state == "done", timeout=60)
    made = runs_of(core, "paused")
    assert [run.scheduled_for for run in made][:3] == [now - k * MINUTE for k in (3, 2, 1)]
    assert all(run.status == "succeeded" for run in made)
    with core.reading() as session:
        row = session.get(Schedule, "paused")
        assert row.enabled and row.disabled_at is None
    with pytest.raises(Conflict, match="paused is enabled: it missed nothing to catch up"):
        catch_up.resume_and_catch_up(core, celery_app, "paused", actor="test")


# --- A real beat, killed and started again ---------------------------------------------------

OWN = "catch-up"


@pytest.fixture
def lab(core: Core, tmp_path: Path) -> Iterator[Lab]:
    with counted_lab(
        core, tmp_path, "tests.sum_squares", queues=(OWN, "reports", "cleanups"),
        database_url=own_database(tmp_path),
    ) as lab:  # fmt: skip
        yield lab


def test_after_beat_is_killed_each_missed_fire_runs_once(lab: Lab, tmp_path: Path) -> None:
    data = {
        "name": "every-2s",
        "job": "tests.sum_squares",
        "params": {"n": 50},
        "interval_seconds": 2,
        "queue": OWN,
        "catch_up": "each",
        "catch_up_max": 100,
    }
    schedules.save_schedule(
        lab.core, lab.celery, schedules.validate_schedule(lab.core, data), actor="t", mode="create"
    )  # fmt: skip
    lab.start_node("catcher", queues=(OWN,))
    env = {**lab.environ, **lab.settings.as_env()}
    beat = start_beat(env, tmp_path / "beat-1.log", tmp_path)
    try:
        wait_until(lambda: len(runs_of(lab.core, "every-2s")) >= 2, timeout=30)
        beat.send_signal(signal.SIGKILL)
        beat.wait()
        time.sleep(8)
        beat = start_beat(env, tmp_path / "beat-2.log", tmp_path)
        down = runs_of(lab.core, "every-2s")[-1].scheduled_for
        # Beat's first fire after the restart, then the catch-up of those in between.
        wait_until(lambda: runs_of(lab.core, "every-2s")[-1].scheduled_for > down + 8 * (
            timedelta(seconds=2)), timeout=60)  # fmt: skip
        wait_until(lambda: _one_backfill(lab.core) and _one_backfill(lab.core).state == "done",
                   timeout=60)  # fmt: skip
    finally:
        if beat.poll() is None:
            stop_process(beat)
    wait_until(lambda: lab.going() == 0, timeout=30)
    fires = [run.scheduled_for for run in runs_of(lab.core, "every-2s")]
    assert len(fires) == len(set(fires))  # one run per fire
    step = timedelta(seconds=2)
    assert all(later - earlier == step for earlier, later in zip(fires, fires[1:], strict=False))
    assert {run.status for run in runs_of(lab.core, "every-2s")} == {"succeeded"}
    assert _one_backfill(lab.core).actor == "catch-up"
    assert datetime.now(UTC) > fires[-1]
