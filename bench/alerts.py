"""Alerts under a soak: false alerts while every schedule runs on time, then alert latency.

Usage: python bench/alerts.py [--schedules 60] [--interval 10] [--cron 20] [--minutes 5]
                              [--database-url URL]

It starts a private redis-server, a real beat and a worker node (``batch.lab.Lab``), and
schedules that all promise a deadline:
- ``--schedules`` interval schedules every ``--interval`` seconds, which must start within
  the interval and succeed within twice it;
- ``--cron`` schedules every minute, which must start within 20 s and succeed within 40 s.

**Soak.** For ``--minutes`` every schedule runs on time: any alert is a **false alert**. The
report counts the fires judged (runs made) and the alerts.

**Latency.** Then beat is killed with ``kill -9``. Each schedule's next fire has no run, and
must raise a ``missed_start`` alert; beat's silence must raise ``beat_silent``. The latency of
an alert is from its deadline (fire time + must start within) to when it was raised. The
baseline, measured by the same watch: the recovery sweep's interval plus the 2 s of grace
(``batch/deadlines.py``), the least any alert can take after its deadline. Ratios are
latency / baseline; the issue's target is 30 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from batch import migrate, schedules  # noqa: E402
from batch.db import utcnow  # noqa: E402
from batch.deadlines import GRACE  # noqa: E402
from batch.lab import Lab, wait_until  # noqa: E402
from batch.models import Alert, Run  # noqa: E402
from batch.processes import start_beat, stop_process  # noqa: E402
from batch.settings import Settings  # noqa: E402

QUEUE = "soak"
SWEEP_SECONDS = 3.0
CRON_START, CRON_SUCCEED = 20, 40


def add_schedules(lab: Lab, count: int, interval: int, cron: int) -> None:
    """The soak's schedules: interval ones and every-minute cron ones, all with deadlines."""
    base = {"job": "bench.cpu_sum", "params": {"items": 1000}, "queue": QUEUE}
    specs = [
        {**base, "name": f"every-{index:04d}", "interval_seconds": interval,
         "must_start_within_seconds": interval, "must_succeed_within_seconds": 2 * interval}
        for index in range(count)
    ] + [
        {**base, "name": f"minute-{index:04d}", "cron": "* * * * *",
         "must_start_within_seconds": CRON_START, "must_succeed_within_seconds": CRON_SUCCEED}
        for index in range(cron)
    ]  # fmt: skip
    for data in specs:
        spec = schedules.validate_schedule(lab.core, data)
        schedules.save_schedule(lab.core, lab.celery, spec, actor="bench", mode="create")


def counts(lab: Lab) -> tuple[int, list[Alert]]:
    """Runs made so far, and every alert."""
    with lab.core.reading() as session:
        made = session.scalar(select(func.count()).select_from(Run))
        raised = list(session.scalars(select(Alert).order_by(Alert.raised_at)))
        session.expunge_all()
    return made, raised


def deadline_of(alert: Alert, within: dict[str, int]) -> datetime:
    """The missed start deadline an alert names: its fire time (in the id) + the promise."""
    schedule, fire = alert.id.removeprefix("missed_deadline:").split(":", 1)
    return datetime.fromisoformat(fire) + timedelta(seconds=within[schedule])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=60)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--cron", type=int, default=20)
    parser.add_argument("--minutes", type=float, default=5)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="batch-alerts-") as tmp:
        database = args.database_url or f"sqlite:///{Path(tmp) / 'alerts.db'}"
        migrate.upgrade(database)
        base = Settings(database_url=database, job_modules=("bench.synthetic_job",))
        lab = Lab.open(
            base, Path(tmp), environ={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
            queues=(QUEUE, "reports", "cleanups"), sweep_interval_seconds=SWEEP_SECONDS,
            beat_silent_seconds=10,
        )  # fmt: skip
        beat = None
        try:
            lab.start_node("soak", concurrency=2, queues=(QUEUE,))
            env = {**lab.environ, **lab.settings.as_env()}
            beat = start_beat(env, Path(tmp) / "beat.log", Path(tmp))
            # Saved while beat runs: each is written through to it and fires at once.
            add_schedules(lab, args.schedules, args.interval, args.cron)
            print(
                f"soak: {args.schedules} schedules every {args.interval} s and {args.cron}"
                f" every minute, for {args.minutes} min", flush=True
            )  # fmt: skip
            time.sleep(args.minutes * 60)
            made, false_alerts = counts(lab)
            print(f"runs made (fires judged): {made}")
            print(f"false alerts: {len(false_alerts)}")
            for alert in false_alerts[:10]:
                print(f"  {alert.id}: {alert.message}")

            beat.send_signal(signal.SIGKILL)
            beat.wait()
            killed = utcnow()
            expected = args.schedules + args.cron
            within = {f"every-{i:04d}": args.interval for i in range(args.schedules)}
            within |= {f"minute-{i:04d}": CRON_START for i in range(args.cron)}

            def all_raised() -> bool:
                raised = [a for a in counts(lab)[1][len(false_alerts) :]]
                missed = {a.schedule_name for a in raised if a.kind == "missed_start"}
                return len(missed) >= expected and any(a.kind == "beat_silent" for a in raised)

            wait_until(all_raised, timeout=180, poll=0.5)
            raised = counts(lab)[1][len(false_alerts) :]
            latencies = sorted(
                (a.raised_at - deadline_of(a, within)).total_seconds()
                for a in raised
                if a.kind == "missed_start"
            )
            silent = next(a for a in raised if a.kind == "beat_silent")
            baseline = SWEEP_SECONDS + GRACE.total_seconds()
            p95 = latencies[int(0.95 * (len(latencies) - 1))]
            print(f"beat killed: {len(latencies)} missed-start alerts (one per schedule)")
            print(
                f"latency after the deadline: median {statistics.median(latencies):.1f} s,"
                f" p95 {p95:.1f} s, max {latencies[-1]:.1f} s; baseline (sweep interval + grace)"
                f" {baseline:.1f} s: max/baseline {latencies[-1] / baseline:.2f}x"
            )
            silent_after = (silent.raised_at - killed).total_seconds()
            print(
                f"beat_silent raised {silent_after:.1f} s after the kill"
                f" (BATCH_BEAT_SILENT_SECONDS=10)"
            )
        finally:
            if beat is not None and beat.poll() is None:
                stop_process(beat)
            lab.close()


if __name__ == "__main__":
    main()
