"""A year of an hourly schedule backfilled: exact, no duplicates, live fires on time.

Usage: python bench/backfill.py [--days 365] [--orders 240000] [--max-running 4]
                                [--live 4] [--baseline-seconds 60] [--database-url URL]

It starts a private redis-server, a real beat and a worker node (``batch.lab.Lab``), and seeds
``--orders`` orders spread over ``--days`` days. Then:

1. **Baseline.** ``--live`` schedules fire every 10 s on the same queue for
   ``--baseline-seconds``: their lateness (a run's start - its fire time) with nothing else
   to do.
2. **Backfill.** An hourly ``reports.sales_summary`` schedule is backfilled over the
   ``--days`` (365 days: 8,760 fires), ``--max-running`` at a time, while the live schedules
   keep firing. Reported: the time it took, runs per second, and the live fires' lateness
   against the baseline (ratios).
3. **Exact.** Every hour's result is compared with the orders of that hour summed in Python
   from one read of the table; the runs are counted per fire (no duplicates).
4. **Again.** The same backfill again must make no run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select  # noqa: E402

from batch import backfills, demo, migrate, schedules  # noqa: E402
from batch.jobs.sales_summary import average  # noqa: E402
from batch.lab import Lab, wait_until  # noqa: E402
from batch.models import Order, Run  # noqa: E402
from batch.processes import start_beat, stop_process  # noqa: E402
from batch.settings import Settings  # noqa: E402

NAME = "sales-hourly"
HOUR = timedelta(hours=1)
#: The end of the backfilled range: a midnight in the past, so every fire is past.
END = datetime(2026, 11, 1, tzinfo=UTC)


def seed(lab: Lab, orders: int, days: int) -> None:
    """``orders`` orders over the ``days`` before END, 30 days per call of the demo seeder."""
    months = max(1, -(-days // 30))
    for month in range(months):
        end = END - timedelta(days=30 * month)
        demo.seed_orders(lab.core.engine, orders // months, seed=month, end=end)


def expected_by_hour(lab: Lab) -> dict[datetime, dict]:
    """Each hour's summary, from one read of every order: the report computed apart."""
    totals: dict[datetime, dict[str, list[int]]] = defaultdict(dict)
    with lab.core.reading() as session:
        rows = session.execute(
            select(Order.created_at, Order.region, Order.quantity, Order.amount_cents)
        )
        for created, region, quantity, cents in rows:
            hour = created.replace(minute=0, second=0, microsecond=0) + HOUR  # the fire
            counts = totals[hour].setdefault(region, [0, 0, 0])
            counts[0] += 1
            counts[1] += quantity
            counts[2] += cents
    expected = {}
    for fire, regions in totals.items():
        shown = {
            region: {"orders": n, "units": units, "revenue_cents": cents,
                     "avg_order_value_cents": average(cents, n)}
            for region, (n, units, cents) in sorted(regions.items())
        }  # fmt: skip
        expected[fire] = {"regions": shown, "orders": sum(r[0] for r in regions.values())}
    return expected


def add_live(lab: Lab, count: int) -> None:
    for index in range(count):
        data = {"name": f"live-{index}", "job": "tests.sum_squares", "params": {"n": 1000},
                "interval_seconds": 10, "queue": "reports"}  # fmt: skip
        spec = schedules.validate_schedule(lab.core, data)
        schedules.save_schedule(lab.core, lab.celery, spec, actor="bench", mode="create")


def live_lateness(lab: Lab, since: datetime, until: datetime) -> list[float]:
    """Seconds from fire to start of the live runs fired in [since, until)."""
    with lab.core.reading() as session:
        rows = session.execute(
            select(Run.scheduled_for, Run.started_at).where(
                Run.schedule_name.like("live-%"),
                Run.scheduled_for >= since,
                Run.scheduled_for < until,
                Run.started_at.is_not(None),
            )
        ).all()
    return sorted((started - fired).total_seconds() for fired, started in rows)


def describe(values: list[float]) -> str:
    if not values:
        return "no fires"
    p95 = values[int(0.95 * (len(values) - 1))]
    return (
        f"{len(values)} fires, median {statistics.median(values) * 1000:.0f} ms,"
        f" p95 {p95 * 1000:.0f} ms, max {values[-1] * 1000:.0f} ms"
    )


def ratio(during: list[float], baseline: list[float], q: float) -> str:
    """During / baseline at quantile ``q`` (0.5: the medians)."""
    if not during or not baseline:
        return "-"

    def pick(values: list[float]) -> float:
        return statistics.median(values) if q == 0.5 else values[int(q * (len(values) - 1))]

    return f"{pick(during) / max(pick(baseline), 1e-3):.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--orders", type=int, default=240_000)
    parser.add_argument("--max-running", type=int, default=4)
    parser.add_argument("--live", type=int, default=4)
    parser.add_argument("--baseline-seconds", type=float, default=60)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="batch-backfill-") as tmp:
        database = args.database_url or f"sqlite:///{Path(tmp) / 'backfill.db'}"
        migrate.upgrade(database)
        base = Settings(database_url=database, job_modules=("tests.jobs_for_tests",))
        lab = Lab.open(
            base, Path(tmp), environ={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
            sweep_interval_seconds=2,
        )  # fmt: skip
        beat = None
        try:
            seed(lab, args.orders, args.days)
            print(f"seeded {args.orders:,} orders over {args.days} days", flush=True)
            lab.start_node("bench", concurrency=2)
            env = {**lab.environ, **lab.settings.as_env()}
            beat = start_beat(env, Path(tmp) / "beat.log", Path(tmp))
            add_live(lab, args.live)
            started = datetime.now(UTC)
            time.sleep(args.baseline_seconds)
            baseline_end = datetime.now(UTC)
            baseline = live_lateness(lab, started, baseline_end)
            print(f"baseline, live fires alone: {describe(baseline)}", flush=True)

            data = {"name": NAME, "job": "reports.sales_summary", "params": {},
                    "cron": "0 * * * *"}  # fmt: skip
            spec = schedules.validate_schedule(lab.core, data)
            schedules.save_schedule(lab.core, lab.celery, spec, actor="bench", mode="create")
            request = backfills.Request(
                NAME, END - timedelta(days=args.days), END, max_running=args.max_running
            )
            began = time.monotonic()
            began_at = datetime.now(UTC)
            backfill = backfills.start_backfill(lab.core, lab.celery, request, actor="bench")
            shown = 0
            while (state := backfills.progress(lab.core, backfill.id))["state"] == "running":
                done = state["runs"].get("succeeded", 0)
                if done >= shown + 1000:
                    elapsed = time.monotonic() - began
                    print(f"  {done:,}/{backfill.fires:,} runs in {elapsed:.0f} s", flush=True)
                    shown = done
                time.sleep(1)
            took = time.monotonic() - began
            during = live_lateness(lab, began_at, datetime.now(UTC))
            print(
                f"backfill: {backfill.fires:,} fires, {args.max_running} at a time:"
                f" {state['state']} in {took:.0f} s ({backfill.fires / took:.1f} runs/s);"
                f" runs {state['runs']}"
            )
            print(f"live fires during the backfill: {describe(during)}")
            print(
                f"live lateness during / baseline: median {ratio(during, baseline, 0.5)},"
                f" p95 {ratio(during, baseline, 0.95)}"
            )

            expected = expected_by_hour(lab)
            with lab.core.reading() as session:
                made = session.execute(
                    select(Run.scheduled_for, Run.status, Run.result).where(
                        Run.schedule_name == NAME
                    )
                ).all()
                distinct = session.scalar(
                    select(func.count(func.distinct(Run.scheduled_for))).where(
                        Run.schedule_name == NAME
                    )
                )
            empty = {"regions": {}, "orders": 0}
            wrong = [
                fire for fire, status, result in made
                if status != "succeeded" or result != expected.get(fire, empty)
            ]  # fmt: skip
            print(
                f"exact: {len(made) - len(wrong):,} of {len(made):,} runs match the orders"
                f" summed apart; wrong: {len(wrong)}; duplicates: {len(made) - distinct}"
            )
            for fire in wrong[:5]:
                print(f"  wrong: {fire}")

            again = backfills.start_backfill(lab.core, lab.celery, request, actor="bench")
            wait_until(
                lambda: backfills.get_backfill(lab.core, again.id).state == "done", timeout=300
            )
            again_made = backfills.get_backfill(lab.core, again.id).runs_made
            with lab.core.reading() as session:
                total = session.scalar(
                    select(func.count()).select_from(Run).where(Run.schedule_name == NAME)
                )
            print(f"again: {again_made} runs made; the schedule has {total:,} runs")
        finally:
            if beat is not None and beat.poll() is None:
                stop_process(beat)
            lab.close()


if __name__ == "__main__":
    main()
