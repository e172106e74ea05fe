"""Engine throughput against multiprocessing.Pool(2), and the fixed cost of a tiny run.

Usage: python bench/throughput.py [--items 100000,1000000] [--repeat 3] [--tiny-runs 200]
                                  [--tiny-throughput 500]
                                  [--redis-url URL] [--broker-url URL] [--database-url URL]

Both sides run in the same run on the same machine: a warm Pool(2) summing 8 ranges (its
best case: no per-item messages) and a warm worker with 2 processes, the engine choosing
its own chunking. The last line is
``engine/pool ratio: X`` for the largest N (throughput of the engine over the pool's).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from celery import chord  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from batch import migrate, runs  # noqa: E402
from batch.celery_app import close_celery, create_celery  # noqa: E402
from batch.core import Core  # noqa: E402
from batch.db import utcnow  # noqa: E402
from batch.jobs import split_range  # noqa: E402
from batch.models import FINISHED_STATES, Run, RunChunk  # noqa: E402
from batch.processes import start_worker, stop_process  # noqa: E402
from batch.redis_server import is_reachable, start_private_redis  # noqa: E402
from batch.settings import Settings  # noqa: E402
from bench.measure import percentile  # noqa: E402
from bench.synthetic_job import work, work_range  # noqa: E402

JOB = "bench.cpu_sum"
POOL_CHUNKS = 8


def wait_finished(core: Core, run_id: str, poll: float) -> Run:
    while True:
        with core.transaction() as session:
            run = session.get(Run, run_id)
            if run is not None and run.status in FINISHED_STATES:
                if run.status != "succeeded":
                    raise RuntimeError(f"run {run_id} {run.status}: {run.error}")
                return run
        time.sleep(poll)


def engine_seconds(core: Core, celery, items: int, poll: float) -> tuple[float, int, str]:
    """Seconds from submit to the aggregate stored, the result, and where the time went."""
    started: datetime = utcnow()
    run_id = runs.submit_run(core, celery, JOB, {"items": items}, trigger="bench")
    run = wait_finished(core, run_id, poll)
    wall = (run.finished_at - started).total_seconds()
    with core.reading() as session:
        spans = session.execute(
            select(RunChunk.started_at, RunChunk.finished_at).where(RunChunk.run_id == run_id)
        ).all()
    first = min(start for start, _ in spans)
    last = max(end for _, end in spans)
    busy = sum((end - start).total_seconds() for start, end in spans)
    detail = (
        f"{run.chunk_count} chunks; first chunk +{(first - started).total_seconds() * 1000:.0f} ms,"
        f" aggregate +{(run.finished_at - last).total_seconds() * 1000:.0f} ms after the last,"
        f" chunk busy {busy:.2f}s"
    )
    return wall, run.result["sum"], detail


def pool_seconds(pool, items: int) -> tuple[float, int]:
    """The strongest plain-Pool baseline: 8 range sums (2 processes x 4), no per-item IPC."""
    ranges = split_range(0, items - 1, POOL_CHUNKS)
    started = time.perf_counter()
    total = sum(pool.map(work_range, ranges, chunksize=1))
    return time.perf_counter() - started, total


def throughput(core: Core, celery, pool, sizes: list[int], repeat: int) -> float:
    ratio = 0.0
    for items in sizes:
        pool_times, engine_times = [], []
        for _ in range(repeat):
            seconds, pool_total = pool_seconds(pool, items)
            pool_times.append(seconds)
            seconds, engine_total, detail = engine_seconds(core, celery, items, poll=0.25)
            engine_times.append(seconds)
            if engine_total != pool_total:
                raise AssertionError(f"engine sum {engine_total} != pool sum {pool_total}")
        pool_median, engine_median = statistics.median(pool_times), statistics.median(engine_times)
        ratio = pool_median / engine_median
        print(
            f"N={items:>9,}: pool {pool_median:7.3f}s  engine {engine_median:7.3f}s "
            f"(median of {repeat})  engine/pool ratio (N={items}): {ratio:.3f}\n"
            f"    last engine run: {detail}",
            flush=True,
        )
    return ratio


def tiny_runs(core: Core, celery, count: int) -> None:
    engine, plain = [], []
    for _ in range(count):
        seconds, _, _ = engine_seconds(core, celery, 1, poll=0.001)
        engine.append(seconds)
        started = time.perf_counter()
        header = [celery.signature("bench.plain_item", args=(item,)) for item in (1, 2)]
        chord(header, app=celery)(celery.signature("bench.plain_total")).get(timeout=30)
        plain.append(time.perf_counter() - started)
    for name, values in (("plain chord (2 tasks)", plain), ("engine tiny run", engine)):
        print(
            f"{name:<22} p50 {percentile(values, 0.5) * 1000:7.1f} ms  "
            f"p99 {percentile(values, 0.99) * 1000:7.1f} ms  (n={count})"
        )
    p50_ratio = percentile(engine, 0.5) / percentile(plain, 0.5)
    p99_ratio = percentile(engine, 0.99) / percentile(plain, 0.99)
    print(f"tiny run / plain chord: p50 {p50_ratio:.2f}x  p99 {p99_ratio:.2f}x", flush=True)


def wait_all_finished(core: Core, run_ids: list[str]) -> None:
    """Until every run is finished (one counting query per poll); a failed one is an error."""
    while True:
        with core.reading() as session:
            statuses = session.execute(
                select(Run.status, func.count()).where(Run.id.in_(run_ids)).group_by(Run.status)
            ).all()
        done = dict(statuses)
        if any(status in done for status in FINISHED_STATES if status != "succeeded"):
            raise RuntimeError(f"tiny runs ended {done}")
        if done.get("succeeded", 0) == len(run_ids):
            return
        time.sleep(0.02)


def tiny_throughput(core: Core, celery, count: int) -> float:
    """Tiny runs per second, fire to aggregate stored, over plain chords per second; the ratio.

    ``count`` fires are sent at once as beat sends them (``batch.start_run`` with a schedule
    and a fire time each), and the clock stops when SQL holds every aggregate. The baseline is
    ``count`` plain chords (two one-item tasks and a callback) sent at once, the clock stopping
    when every callback's result is in. The same worker (2 processes) runs both.
    """
    queue = celery.batch_core.jobs.get(JOB).queue
    base = utcnow().replace(microsecond=0) - timedelta(days=1)
    fires = [(f"tiny-{time.time_ns()}", base + timedelta(seconds=i)) for i in range(count)]
    started = time.perf_counter()
    with celery.producer_or_acquire() as producer:
        for schedule, fire_at in fires:
            celery.send_task(
                "batch.start_run", queue=queue, producer=producer,
                kwargs={
                    "job": JOB, "params": {"items": 1}, "trigger": f"schedule:{schedule}",
                    "schedule": schedule, "scheduled_for": fire_at.isoformat(),
                },
            )  # fmt: skip
    wait_all_finished(core, [runs.scheduled_run_id(name, at) for name, at in fires])
    engine = count / (time.perf_counter() - started)
    started = time.perf_counter()
    results = [
        chord([celery.signature("bench.plain_item", args=(item,)) for item in (1, 2)], app=celery)(
            celery.signature("bench.plain_total")
        )
        for _ in range(count)
    ]
    for result in results:
        result.get(timeout=120)
    plain = count / (time.perf_counter() - started)
    ratio = plain / engine
    print(
        f"tiny runs at once (n={count}): engine {engine:6.1f} runs/s  plain chord "
        f"{plain:6.1f} chords/s  cost per run engine/chord {ratio:.2f}x",
        flush=True,
    )
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--items", default="100000,1000000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--tiny-runs", type=int, default=200)
    parser.add_argument("--tiny-throughput", type=int, default=500)
    parser.add_argument("--redis-url", default="")
    parser.add_argument("--broker-url", default="")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    sizes = [int(size) for size in args.items.split(",")]

    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        workdir = Path(tmp)
        server = None
        redis_url = args.redis_url
        if not redis_url or not is_reachable(redis_url):
            server = start_private_redis(workdir / "redis")
            redis_url = server.url
        settings = Settings(
            redis_url=redis_url,
            broker_url=args.broker_url,
            database_url=args.database_url or f"sqlite:///{workdir / 'bench.db'}",
            job_modules=("bench.synthetic_job",),
        )
        migrate.upgrade(settings.database_url)
        env = {
            **os.environ,
            "REDIS_URL": settings.redis_url,
            "BROKER_URL": settings.broker_url,
            "DATABASE_URL": settings.database_url,
            "BATCH_JOB_MODULES": ",".join(settings.job_modules),
            "PYTHONPATH": str(ROOT),
        }
        worker = start_worker(
            env, workdir / "worker.log", name="bench", redis_url=redis_url, concurrency=2, cwd=ROOT
        )
        core = Core(settings)
        celery = create_celery(settings, core)
        print(
            f"broker {settings.effective_broker_url.split('@')[-1]}  "
            f"database {core.engine.dialect.name}  cores {os.cpu_count()}",
            flush=True,
        )
        try:
            with multiprocessing.Pool(2) as pool:
                pool.map(work, range(1000))  # warm
                engine_seconds(core, celery, 1000, poll=0.01)  # warm
                if args.tiny_runs:
                    tiny_runs(core, celery, args.tiny_runs)
                if args.tiny_throughput:
                    tiny_throughput(core, celery, args.tiny_throughput)
                ratio = throughput(core, celery, pool, sizes, args.repeat)
        finally:
            close_celery(celery)
            stop_process(worker)
            if server is not None:
                server.stop()
        print(f"engine/pool ratio: {ratio:.3f}")


if __name__ == "__main__":
    main()
