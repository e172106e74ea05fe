"""The deadline watch at scale: one sweep pass over 10,000 schedules with deadlines.

Usage: python bench/deadline_scale.py [--schedules 10000] [--passes 20] [--database-url URL]

The schedules (cron, hourly at minutes spread over the hour, must start within 60 s) are
written straight to SQL, saved two hours ago, with no runs: beat was down. Three figures:
- **baseline**: reading the watched schedules' timing (the one query every pass makes), the
  least a pass can cost;
- **first pass**: a new watch judges every schedule's latest fire, finds no run, and raises
  one alert per schedule (the worst pass there is: every fire missed);
- **steady pass**: the same watch again, when no deadline is due (each schedule's next check
  is remembered).
Each is the median of ``--passes`` (the first pass: of fresh watches over a fresh database).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import delete, func, insert, select  # noqa: E402

from batch import deadlines, migrate  # noqa: E402
from batch.core import Core  # noqa: E402
from batch.db import utcnow  # noqa: E402
from batch.models import Alert, AlertEvent, Schedule  # noqa: E402
from batch.settings import Settings  # noqa: E402


def seed(core: Core, count: int) -> None:
    saved = utcnow() - timedelta(hours=2)
    rows = [
        {
            "name": f"s-{index:05d}", "job": "reports.sales_summary", "params": {},
            "cron": f"{index % 60} * * * *", "timezone": "UTC", "enabled": True,
            "overlap": "allow", "description": "", "must_start_within_seconds": 60,
            "alert_after_failures": 1, "created_at": saved, "updated_at": saved,
        }
        for index in range(count)
    ]  # fmt: skip
    with core.transaction() as session:
        session.execute(insert(Schedule), rows)


def median_ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=20)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="batch-deadlines-") as tmp:
        database = args.database_url or f"sqlite:///{Path(tmp) / 'deadlines.db'}"
        migrate.upgrade(database)
        core = Core(Settings(database_url=database))
        seed(core, args.schedules)
        baseline, first, steady = [], [], []
        for _ in range(args.passes):
            started = time.perf_counter()
            with core.reading() as session:
                session.execute(deadlines.WATCHED).all()
            baseline.append(time.perf_counter() - started)

            with core.transaction() as session:
                session.execute(delete(AlertEvent))
                session.execute(delete(Alert))
            watch = deadlines.DeadlineWatch()
            started = time.perf_counter()
            raised = watch.check(core, utcnow())
            first.append(time.perf_counter() - started)
            assert len(raised) == args.schedules, len(raised)

            started = time.perf_counter()
            assert watch.check(core, utcnow()) == []
            steady.append(time.perf_counter() - started)
        with core.reading() as session:
            alerts = session.scalar(select(func.count()).select_from(Alert))
        core.dispose()
    base = statistics.median(baseline)
    print(
        f"{args.schedules} schedules with deadlines, {args.passes} passes, {database.split(':')[0]}"
    )
    print(f"baseline (read the watched timing): {median_ms(baseline)}")
    print(
        f"first pass (every fire judged and missed, {alerts} alerts raised): {median_ms(first)}"
        f" = {statistics.median(first) / base:.1f}x baseline"
    )
    print(
        f"steady pass (nothing due): {median_ms(steady)}"
        f" = {statistics.median(steady) / base:.1f}x baseline"
    )


if __name__ == "__main__":
    main()
