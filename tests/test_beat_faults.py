"""Beat under faults, with real processes: Redis killed and restarted, the active beat killed."""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path

import pytest
from celery import Celery

from batch.celery_app import close_celery, create_celery
from batch.core import Core
from batch.db import utcnow
from batch.entries import delete_entry
from batch.processes import start_beat, start_worker, stop_process
from batch.redis_server import PrivateRedis, start_private_redis
from batch.settings import Settings
from tests.conftest import ROOT, settings_env
from tests.test_beat import add_interval_schedule, scheduled_runs

ONE_SECOND = timedelta(seconds=1)
#: The most a standby may take to fire after the active beat is killed (issue 9).
HAND_OVER_LIMIT_SECONDS = 10
#: Its own queue, so that on a shared RabbitMQ vhost the session's worker never takes its
#: messages (that worker stores results in the session's Redis, not in the private one).
FAULT_QUEUE = "beat-faults"


def fire_times(core: Core, name: str) -> list[datetime]:
    """The schedule's fire times as runs in SQL, oldest first."""
    return [run.scheduled_for for run in scheduled_runs(core, name)]


def wait_for_fires(
    core: Core, name: str, count: int, timeout: float, after: datetime | None = None
) -> None:
    """Wait until ``count`` runs of ``name`` fired (after ``after``, if given) exist in SQL."""
    deadline = time.monotonic() + timeout
    while sum(after is None or fire > after for fire in fire_times(core, name)) < count:
        assert time.monotonic() < deadline, f"{name}: fewer than {count} fires after {after}"
        time.sleep(0.1)


def gaps(fires: list[datetime]) -> list[timedelta]:
    return [later - earlier for earlier, later in pairwise(fires)]


def assert_no_traceback(log: Path) -> None:
    text = log.read_text()
    assert "Traceback" not in text, text[-3000:]


def duplicate_deliveries(worker_log: Path, offset: int) -> int:
    """Runs a worker found already started (a fire delivered twice) since ``offset``."""
    with worker_log.open("rb") as log:
        log.seek(offset)
        return len(re.findall(rb"duplicate delivery ignored", log.read()))


class FaultSystem:
    """A redis-server, a worker and a Celery app of the test's own (the broker too, on Redis)."""

    def __init__(self, settings: Settings, redis: PrivateRedis, directory: Path) -> None:
        self.redis = redis
        self.directory = directory
        self.settings = dataclasses.replace(settings, redis_url=redis.url)
        self.core = Core(self.settings)
        self.celery = create_celery(self.settings, self.core)
        self.worker: subprocess.Popen[bytes] | None = None

    def start_worker(self, log: Path) -> None:
        """A worker of its own, on the test's queue only (a running one is stopped first)."""
        if self.worker is not None:
            stop_process(self.worker)
        self.worker = start_worker(
            settings_env(self.settings), log, name="beat-faults",
            redis_url=self.redis.url, queues=(FAULT_QUEUE,), cwd=ROOT,
        )  # fmt: skip

    def close(self) -> None:
        """Stop the worker and redis-server, close the app's connections."""
        if self.worker is not None:
            stop_process(self.worker)
        close_celery(self.celery)
        self.redis.stop()

    def kill_redis(self) -> None:
        """``kill -9`` the redis-server."""
        self.redis.process.kill()
        self.redis.process.wait()

    def restart_redis(self) -> None:
        """A new, empty redis-server on the same port (nothing was kept on disk)."""
        port = int(self.redis.url.rsplit(":", 1)[1].split("/")[0])
        self.redis = start_private_redis(self.directory, port=port)


@pytest.fixture
def fault_system(core: Core, tmp_path: Path) -> Iterator[FaultSystem]:
    directory = tmp_path / "redis"
    settings = dataclasses.replace(core.settings, queues=(FAULT_QUEUE, "reports", "cleanups"))
    system = FaultSystem(settings, start_private_redis(directory), directory)
    try:
        yield system
    finally:
        system.close()


def between_two_fires(core: Core, name: str) -> None:
    """Return just after the next fire reached SQL: well before beat sends the one after."""
    wait_for_fires(core, name, len(fire_times(core, name)) + 1, timeout=10)
    time.sleep(0.3)


def test_beat_rides_out_a_redis_restart_and_fires_again(
    core: Core, fault_system: FaultSystem, tmp_path: Path
) -> None:
    # On a Redis broker the messages go down with Redis too; on RabbitMQ only the RedBeat side
    # (the lock, the entries) and the results are lost. Beat must come back on its own either way.
    system = fault_system
    system.start_worker(tmp_path / "worker.log")
    add_interval_schedule(system.core, system.celery, "every-1s", 1)
    log = tmp_path / "beat.log"
    # Reconcile every second, so that its thread meets the dead Redis too.
    env = {**settings_env(system.core.settings), "BATCH_RECONCILE_INTERVAL_SECONDS": "1"}
    beat = start_beat(env, log, tmp_path)
    try:
        wait_for_fires(core, "every-1s", 2, timeout=20)
        between_two_fires(core, "every-1s")  # Redis dies between ticks, not mid-send
        system.kill_redis()
        killed_at = time.monotonic()
        time.sleep(3)  # several ticks, and the reconcile thread, meet a dead Redis
        assert beat.poll() is None, log.read_text()[-3000:]
        before = fire_times(core, "every-1s")
        system.restart_redis()
        restarted, down = utcnow(), time.monotonic() - killed_at
        # A fresh worker: whether a worker survives a lost Redis is tests/test_recovery.py's
        # subject (kombu's Redis transport may stop the worker); this test is about beat.
        system.start_worker(tmp_path / "worker-2.log")
        wait_for_fires(core, "every-1s", 2, timeout=20, after=restarted)
        assert beat.poll() is None, log.read_text()[-3000:]
    finally:
        beat.terminate()
        beat.wait(timeout=20)
    after = fire_times(core, "every-1s")
    text = log.read_text()
    assert text.count("beat: Redis unreachable") == 1, text[-3000:]
    # The reconcile thread: one line per pass (one a second here) while Redis was down.
    assert 1 <= text.count("reconcile failed (") <= down + 1, text[-3000:]
    assert "beat: lock re-acquired, reconciling schedules" in text
    assert "'restored': 1" in text  # the entry came back from SQL with its last fire
    assert_no_traceback(log)
    # Fires kept their grid across the outage: unique, 1 s apart or a whole number of seconds
    # apart where fires were lost with Redis or collapsed into the first one after it.
    assert after[: len(before)] == before
    assert all(gap >= ONE_SECOND and gap % ONE_SECOND == timedelta(0) for gap in gaps(after))


def children(pid: int) -> list[int]:
    """The pids of a process's children."""
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in found.stdout.split()]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def sends(log: Path, name: str) -> int:
    """Fires a beat sent, by its log."""
    return log.read_text().count(f"{name} @ ")


#: Fires of the 1 s schedule seen before the kill, and again after the hand-over.
FIRES_EACH_SIDE = 12


def test_standby_beat_fires_within_10s_of_the_active_beat_killed_and_never_twice(
    core: Core, celery_app: Celery, worker: Path, tmp_path: Path
) -> None:
    offset = worker.stat().st_size
    add_interval_schedule(core, celery_app, "every-1s", 1)
    env = settings_env(core.settings)
    logs = [tmp_path / "beat-1.log", tmp_path / "beat-2.log"]
    beats = [start_beat(env, log, tmp_path) for log in logs]
    try:
        # About half a minute in all: half with both beats up, half after the kill.
        wait_for_fires(core, "every-1s", FIRES_EACH_SIDE, timeout=FIRES_EACH_SIDE + 20)
        holders = [i for i, log in enumerate(logs) if "beat: Acquired lock" in log.read_text()]
        assert len(holders) == 1, holders
        active, standby = beats[holders[0]], beats[1 - holders[0]]
        # Killed between two sends, so that every fire its log names was sent.
        between_two_fires(core, "every-1s")
        # Its reconcile process (full passes) must not outlive it.
        reconciler = children(active.pid)
        assert len(reconciler) >= 1
        os.kill(active.pid, signal.SIGKILL)
        killed_at, killed = time.monotonic(), utcnow()
        active.wait()
        wait_for_fires(core, "every-1s", 1, timeout=HAND_OVER_LIMIT_SECONDS, after=killed)
        hand_over = time.monotonic() - killed_at
        wait_for_fires(
            core, "every-1s", FIRES_EACH_SIDE, timeout=FIRES_EACH_SIDE + 20, after=killed
        )
        assert standby.poll() is None
        between_two_fires(core, "every-1s")
        assert not any(alive(pid) for pid in reconciler)
    finally:
        for beat in beats:
            if beat.poll() is None:
                beat.terminate()
                beat.wait(timeout=20)
        delete_entry(celery_app, "every-1s")
    sent = sum(sends(log, "every-1s") for log in logs)
    fires = fire_times(core, "every-1s")
    assert hand_over < HAND_OVER_LIMIT_SECONDS
    print(f"hand-over: first standby fire seen {hand_over:.1f}s after the kill; {sent} fires")
    # Every fire sent made one run, and no fire was sent twice (by both beats, or twice by one).
    assert (len(fires), len(set(fires))) == (sent, sent)
    assert duplicate_deliveries(worker, offset) == 0
    # Fire times are on the 1 s grid. The gap that spans the kill holds the fires due while no
    # beat held the lock, collapsed into the standby's first fire (the latest one due). Any
    # other gap is a tick more than 1 s late, collapsed the same way: beat sent nothing there,
    # as the count of sends above shows.
    assert all(gap >= ONE_SECOND and gap % ONE_SECOND == timedelta(0) for gap in gaps(fires))
    last_before = max(fire for fire in fires if fire <= killed)
    first_after = min(fire for fire in fires if fire > killed)
    assert first_after - last_before > ONE_SECOND
    assert first_after - killed < timedelta(seconds=HAND_OVER_LIMIT_SECONDS)
    assert_no_traceback(logs[1 - holders[0]])


def test_beat_lock_timeout_is_a_setting_and_at_least_3_seconds() -> None:
    assert Settings.from_env({}, services_file=None).beat_lock_timeout_seconds == 5
    settings = Settings.from_env({"BATCH_BEAT_LOCK_TIMEOUT_SECONDS": "8"}, services_file=None)
    app = create_celery(settings)
    assert (app.redbeat_conf.lock_timeout, app.conf.beat_max_loop_interval) == (8, 1)
    close_celery(app)
    with pytest.raises(ValueError, match="BATCH_BEAT_LOCK_TIMEOUT_SECONDS"):
        Settings(beat_lock_timeout_seconds=2)
