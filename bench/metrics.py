"""The cost of a Prometheus scrape of ``/metrics`` at 10,000 schedules.

Usage: python bench/metrics.py [--schedules 10000] [--scrapes 10] [--histograms schedule]
                               [--database-url URL]

Seeds the schedules (with their RedBeat entries, a tenth disabled, as bench/web.py does) and
the running totals of ten runs each (runs by status, both histograms, last fire and success),
starts the Procfile's web process and scrapes ``/metrics`` with a metrics token, asking for
gzip as Prometheus does. Prints the scrape's p50 and worst time, its size in samples and
bytes (gzipped and not), and the ratio of the scrape to
the baseline measured in the same run: a bare read of the same rows (``run_stats``,
``schedules``, RedBeat's sorted set) with no metric built.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import http.client
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from sqlalchemy import insert, select  # noqa: E402

from batch import run_stats, users  # noqa: E402
from batch.celery_app import close_celery, create_celery  # noqa: E402
from batch.core import Core  # noqa: E402
from batch.db import utcnow  # noqa: E402
from batch.models import RunStat, Schedule  # noqa: E402
from batch.processes import stop_process  # noqa: E402
from batch.redis_server import start_private_redis  # noqa: E402
from batch.settings import METRICS_HISTOGRAMS  # noqa: E402
from bench.measure import percentile  # noqa: E402
from bench.web import migrated_settings, seed_schedules, start_web  # noqa: E402

RUNS_EACH = 10


def seed_totals(core: Core, names: list[str]) -> int:
    """The totals of RUNS_EACH runs per schedule (9 succeeded, 1 failed); the rows written."""
    fired = utcnow().timestamp()
    rows = []
    for name in names:
        job = "cleanups.purge_runs" if int(name.split("-")[1]) % 3 == 0 else "reports.sales_summary"
        per = {
            (run_stats.RUNS, "succeeded"): RUNS_EACH - 1.0,
            (run_stats.RUNS, "failed"): 1.0,
            (run_stats.LATENESS, "0.5"): 6.0,
            (run_stats.LATENESS, "1"): 3.0,
            (run_stats.LATENESS, "5"): 1.0,
            (f"{run_stats.LATENESS}_sum", ""): 6.1,
            (run_stats.DURATION, "5"): 8.0,
            (run_stats.DURATION, "30"): 2.0,
            (f"{run_stats.DURATION}_sum", ""): 41.5,
            (run_stats.LAST_FIRE, ""): fired,
            (run_stats.LAST_SUCCESS, ""): fired + 4,
        }
        rows += [
            {"job": job, "schedule_name": name, "series": s, "label": lb, "value": v}
            for (s, lb), v in per.items()
        ]
    with core.engine.begin() as connection:
        connection.execute(insert(RunStat), rows)
    return len(rows)


def bare_read(core: Core, schedule_key: str) -> float:
    """Seconds to read what a scrape reads, building nothing: the baseline."""
    started = time.perf_counter()
    with core.reading() as session:
        session.execute(select(RunStat.__table__)).all()
        session.execute(select(Schedule.name, Schedule.job, Schedule.queue)).all()
    core.redis.zrange(schedule_key, 0, -1, withscores=True)
    return time.perf_counter() - started


def scrape(port: int, token: str) -> tuple[float, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}
    connection.request("GET", "/metrics", headers=headers)
    response = connection.getresponse()
    body = response.read()
    seconds = time.perf_counter() - started
    if response.status != 200:
        raise RuntimeError(f"/metrics answered {response.status}: {body[:200]!r}")
    return seconds, body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--scrapes", type=int, default=10)
    parser.add_argument("--histograms", choices=METRICS_HISTOGRAMS, default="schedule")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="batch-metrics-bench-") as tmp:
        workdir = Path(tmp)
        redis = start_private_redis(workdir / "redis")
        database_url = args.database_url or f"sqlite:///{workdir}/metrics.db"
        settings = dataclasses.replace(
            migrated_settings(redis.url, database_url), metrics_histograms=args.histograms
        )
        core = Core(settings)
        seed_schedules(core, args.schedules)
        names = [f"bench-{index:06d}" for index in range(args.schedules)]
        rows = seed_totals(core, names)
        token = users.add_token(core, "bench", users.METRICS_SCOPE)
        celery = create_celery(settings, core)
        schedule_key = celery.redbeat_conf.schedule_key
        close_celery(celery)
        print(f"seeded {args.schedules:,} schedules, {rows:,} run_stats rows")
        web, port = start_web(settings)
        try:
            scrape(port, token)  # warm
            times, bodies = [], []
            for _ in range(args.scrapes):
                seconds, body = scrape(port, token)
                times.append(seconds)
                bodies.append(body)
            base = [bare_read(core, schedule_key) for _ in range(args.scrapes)]
        finally:
            stop_process(web)
            core.dispose()
            redis.stop()
    text = gzip.decompress(bodies[-1]).decode()
    samples = sum(len(f.samples) for f in text_string_to_metric_families(text))
    p50, worst, base_p50 = percentile(times, 0.5), max(times), percentile(base, 0.5)
    print(
        f"scrape (BATCH_METRICS_HISTOGRAMS={args.histograms}): {samples:,} samples,"
        f" {len(text) / 1e6:.1f} MB, {len(bodies[-1]) / 1e6:.2f} MB gzipped"
    )
    print(
        f"scrape p50 {p50 * 1000:.0f} ms, worst {worst * 1000:.0f} ms;"
        f" bare read of the same rows (baseline) p50 {base_p50 * 1000:.0f} ms;"
        f" scrape/baseline {p50 / base_p50:.1f}x"
    )


if __name__ == "__main__":
    main()
