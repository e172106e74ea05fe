"""No double fire and no missed fire across every path a schedule takes in beat: an edit, a
disable and enable, reconcile passes (changes and full, every second or two here), a Redis
flush, a beat restart and a hand-over between two beats. Real beats, a real worker, SQL."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from celery import Celery

from batch import schedules
from batch.core import Core
from batch.db import utcnow
from batch.processes import start_beat
from tests.conftest import settings_env
from tests.test_beat import add_interval_schedule
from tests.test_beat_faults import assert_no_traceback, fire_times, gaps, wait_for_fires

STEADY, EDITED, TOGGLED = "path-steady", "path-edited", "path-toggled"
SENT_LINE = re.compile(r"beat: sent \d+ fire\(s\): (.*)")
#: A beat can fire again: it took the lock, or reconcile restored the entries a flush lost.
RESUMED = re.compile(r"^\[([\d-]+ [\d:,]+): .*(?:beat: Acquired lock|'restored': [1-9])", re.M)


def resumed(logs: list[Path]) -> list[datetime]:
    """When a beat could fire again (Celery logs local time)."""
    return sorted(
        datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC)
        for log in logs
        for stamp in RESUMED.findall(log.read_text())
    )


def sent_fires(logs: list[Path]) -> Counter[tuple[str, str]]:
    """(schedule, fire time) of every fire the beats' logs say they sent."""
    sent: Counter[tuple[str, str]] = Counter()
    for log in logs:
        for match in SENT_LINE.finditer(log.read_text()):
            for item in match.group(1).split(", "):
                name, _, fire = item.partition(" @ ")
                sent[(name, fire.split(" and ")[0])] += 1
    return sent


def stop(beat: subprocess.Popen[bytes]) -> None:
    beat.terminate()
    beat.wait(timeout=20)


def test_no_double_and_no_missed_fire_across_every_path(
    core: Core, celery_app: Celery, worker: Path, tmp_path: Path
) -> None:
    # Reconcile as often as it can go: changes every second, a full pass every 2 s.
    fast = dataclasses.replace(
        core.settings, reconcile_interval_seconds=1, full_reconcile_interval_seconds=2
    )
    env = settings_env(fast)
    logs = [tmp_path / f"beat-{i}.log" for i in range(3)]
    add_interval_schedule(core, celery_app, STEADY, 1)
    add_interval_schedule(core, celery_app, EDITED, 2)
    add_interval_schedule(core, celery_app, TOGGLED, 1)
    beats = [start_beat(env, logs[0], tmp_path)]
    disruptions: list[datetime] = []
    try:
        wait_for_fires(core, STEADY, 4, timeout=20)
        # An edit: every 2 s becomes every 3 s.
        edited_at = utcnow()
        spec = schedules.validate_schedule(
            core, {"name": EDITED, "job": "tests.sum_squares", "params": {"n": 100},
                   "interval_seconds": 3},
        )  # fmt: skip
        schedules.save_schedule(core, celery_app, spec, actor="test", mode="update")
        # A disable for 3 s, then enable.
        schedules.set_enabled(core, celery_app, TOGGLED, False, actor="test")
        disabled_at = utcnow()
        time.sleep(3)
        enabled_at = utcnow()
        schedules.set_enabled(core, celery_app, TOGGLED, True, actor="test")
        time.sleep(4)  # reconcile passes, full ones too, race the fires
        # A Redis flush.
        disruptions.append(utcnow())
        core.redis.flushall()
        wait_for_fires(core, STEADY, 4, timeout=20, after=disruptions[-1])
        # A beat restart.
        stop(beats[0])
        disruptions.append(utcnow())
        time.sleep(1.5)
        beats.append(start_beat(env, logs[1], tmp_path))
        wait_for_fires(core, STEADY, 4, timeout=20, after=disruptions[-1])
        # A hand-over: a standby waits, the active beat stops, the standby takes over.
        beats.append(start_beat(env, logs[2], tmp_path))
        time.sleep(3)
        disruptions.append(utcnow())
        stop(beats[1])
        wait_for_fires(core, STEADY, 4, timeout=20, after=disruptions[-1])
        standby_log = logs[2].read_text()
        assert "beat: Acquired lock" in standby_log or "lock re-acquired" in standby_log
    finally:
        for beat in beats:
            if beat.poll() is None:
                stop(beat)
        for name in (STEADY, EDITED, TOGGLED):
            schedules.remove_schedule(core, celery_app, name, actor="test")
    second = timedelta(seconds=1)
    steady = fire_times(core, STEADY)
    # On the grid, one run per fire time, and no second missed while a beat held the lock:
    # each gap longer than 1 s spans one of the three disruptions, and is short.
    assert len(steady) == len(set(steady))
    assert all(gap >= second and gap % second == timedelta(0) for gap in gaps(steady))
    # The fire after the gap is the newest one due when a beat could fire again (it held the
    # lock and the entries were back): the fires due meanwhile collapse into it, as documented;
    # none is missed otherwise.
    long_gaps = [(a, b) for a, b in zip(steady, steady[1:], strict=False) if b - a > second]
    assert len(long_gaps) <= len(disruptions), (long_gaps, disruptions)
    taken = resumed(logs)
    for before, after in long_gaps:
        assert any(before - 2 * second < d < after for d in disruptions), (before, after)
        assert any(-second < after - moment <= second / 2 for moment in taken), (after, taken)
    # The edit: 2 s apart before it, 3 s apart after the first fire on the new timing.
    edited = fire_times(core, EDITED)
    before = [fire for fire in edited if fire <= edited_at]
    after = [fire for fire in edited if fire > edited_at + timedelta(seconds=3)]
    assert all(gap == 2 * second for gap in gaps(before)), before
    assert after and all(gap % (3 * second) == timedelta(0) for gap in gaps(after)), after
    # The disable: no fire while disabled, and fires again at once after.
    toggled = fire_times(core, TOGGLED)
    assert not [fire for fire in toggled if disabled_at + second < fire < enabled_at]
    assert any(enabled_at < fire <= enabled_at + 2 * second for fire in toggled), toggled
    # No fire was sent twice. Only a flush may resend the fire in flight at that moment (its
    # run was not in SQL yet when the entry was restored); it still made one run.
    sent = sent_fires(logs)
    flush = disruptions[0]
    twice = [
        key for key, count in sent.items()
        if count > 1 and not abs(datetime.fromisoformat(key[1]) - flush) < 2 * second
    ]  # fmt: skip
    assert twice == []
    for log in logs:
        assert_no_traceback(log)
