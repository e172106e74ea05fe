"""Admin page latency under load: 100,000 runs, 10,000 schedules, 20 concurrent clients, one
web process.

Usage: python bench/web.py [--runs 100000] [--schedules 10000] [--clients 20] [--requests 40]
                           [--database-url URL]

Seeds runs (with chunks and sales-summary aggregates) and schedules (with their RedBeat
entries, a tenth of them disabled) into a fresh database, starts the
Procfile's web process (gunicorn, one worker process), signs in once, then has N client
threads fetch each page over keep-alive connections. Prints p50/p99 per page and the ratio
of each page's p99 to /healthz's p99 measured under the same load in the same run.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert  # noqa: E402

from batch import entries, migrate, users  # noqa: E402
from batch.celery_app import close_celery, create_celery  # noqa: E402
from batch.core import Core  # noqa: E402
from batch.db import utcnow  # noqa: E402
from batch.models import Run, RunChunk, Schedule  # noqa: E402
from batch.processes import stop_process  # noqa: E402
from batch.redis_server import free_port, start_private_redis  # noqa: E402
from batch.settings import Settings  # noqa: E402
from bench.measure import percentile  # noqa: E402

REGIONS = ("central", "east", "north", "south", "west")
JOBS = (("reports.sales_summary", 0.7), ("cleanups.purge_runs", 0.3))
STATUSES = (("succeeded", 0.93), ("failed", 0.05), ("running", 0.02))
#: How runs were started (a schedule's runs name one of the first SCHEDULES_WITH_RUNS).
TRIGGERS = (("schedule:", 0.9), ("user:ann", 0.07), ("api:etl", 0.02), ("cli", 0.01))
SCHEDULES_WITH_RUNS = 1_000
CHUNKS = 8
BATCH = 5_000


def _sales_result(rng: random.Random) -> dict:
    regions = {}
    for region in REGIONS:
        orders = rng.randrange(50, 400)
        revenue = orders * rng.randrange(2_000, 20_000)
        regions[region] = {
            "orders": orders,
            "units": orders * 2,
            "revenue_cents": revenue,
            "avg_order_value_cents": revenue // orders,
        }
    return {"regions": regions, "orders": sum(r["orders"] for r in regions.values())}


def seed_runs(core: Core, count: int) -> list[str]:
    """Insert ``count`` runs with their chunks over the last 100 days; returns some ids."""
    rng = random.Random(11)
    now = datetime.now(UTC)
    sample: list[str] = []
    with core.engine.begin() as connection:
        for start in range(0, count, BATCH):
            runs, chunks = [], []
            for offset in range(start, min(count, start + BATCH)):
                run_id = str(uuid.UUID(int=rng.getrandbits(128)))
                job = rng.choices([j for j, _ in JOBS], [w for _, w in JOBS])[0]
                status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
                trigger = rng.choices([t for t, _ in TRIGGERS], [w for _, w in TRIGGERS])[0]
                schedule = None
                if trigger == "schedule:":
                    schedule = f"bench-{rng.randrange(SCHEDULES_WITH_RUNS):06d}"
                    trigger += schedule
                created = now - timedelta(seconds=(count - offset) * 86.4)
                finished = created + timedelta(seconds=rng.uniform(0.2, 30))
                done = status == "succeeded"
                result = (
                    (_sales_result(rng) if job.startswith("reports") else {"deleted_runs": 3})
                    if done
                    else None
                )
                runs.append(
                    {
                        "id": run_id, "job": job, "params": {}, "status": status,
                        "trigger": trigger, "schedule_name": schedule, "scheduled_for": None,
                        "queue": "reports", "chunk_count": CHUNKS, "result": result,
                        "error": "chunk 3: ValueError: boom" if status == "failed" else None,
                        "created_at": created, "started_at": created,
                        "finished_at": finished if status != "running" else None,
                    }
                )  # fmt: skip
                for index in range(CHUNKS):
                    chunk_done = done or index % 2 == 0
                    chunks.append(
                        {
                            "run_id": run_id, "chunk_index": index,
                            "status": "succeeded" if chunk_done else status,
                            "attempts": 1, "partial": {"n": index} if chunk_done else None,
                            "error": None, "started_at": created, "finished_at": finished,
                        }
                    )  # fmt: skip
                if rng.random() < 0.002:
                    sample.append(run_id)
            connection.execute(insert(Run), runs)
            connection.execute(insert(RunChunk), chunks)
    return sample


def seed_schedules(core: Core, count: int) -> None:
    """Insert ``count`` schedules (a third of them cleanups, a tenth disabled) and write the
    enabled ones through to RedBeat, as an import would."""
    now = utcnow()
    rows = [
        {
            "name": f"bench-{index:06d}", "params": {}, "timezone": "UTC",
            "job": "cleanups.purge_runs" if index % 3 == 0 else "reports.sales_summary",
            "cron": f"{index % 60} * * * *", "interval_seconds": None,
            "enabled": index % 10 != 0, "overlap": "allow", "queue": None, "priority": None,
            "deadline_seconds": None, "description": f"Bench schedule {index}", "source": None,
            "created_at": now, "updated_at": now,
        }
        for index in range(count)
    ]  # fmt: skip
    with core.engine.begin() as connection:
        connection.execute(insert(Schedule), rows)
    celery = create_celery(core.settings, core)
    try:
        entries.write_entries(celery, [Schedule(**row) for row in rows])
    finally:
        close_celery(celery)


class Client:
    """One keep-alive connection carrying the signed-in session cookie."""

    def __init__(self, port: int, cookie: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookie = cookie

    def get(self, path: str) -> tuple[int, float]:
        started = time.perf_counter()
        self.connection.request("GET", path, headers={"Cookie": self.cookie})
        response = self.connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - started


def sign_in(port: int, name: str, password: str) -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/login")
    response = connection.getresponse()
    page = response.read().decode()
    cookie = response.getheader("Set-Cookie", "").split(";")[0]
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    body = urlencode({"name": name, "password": password, "csrf_token": token})
    headers = {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
    connection.request("POST", "/login", body=body, headers=headers)
    response = connection.getresponse()
    response.read()
    if response.status != 302:
        raise RuntimeError(f"sign-in failed: {response.status}")
    return response.getheader("Set-Cookie", "").split(";")[0]


def load(port: int, cookie: str, paths: list[str], clients: int, per_client: int) -> list[float]:
    """Latencies of ``clients`` threads each fetching ``per_client`` paths (round robin)."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def worker(offset: int) -> None:
        client = Client(port, cookie)
        mine = []
        for index in range(per_client):
            path = paths[(offset + index) % len(paths)]
            status, seconds = client.get(path)
            if status != 200:
                errors.append(f"{path}: {status}")
            mine.append(seconds)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError(f"{len(errors)} failed requests, e.g. {errors[:3]}")
    return latencies


def days_ago(days: int) -> str:
    """The UTC date ``days`` before today, as the runs filters take it."""
    return (datetime.now(UTC) - timedelta(days=days)).date().isoformat()


def web_command(port: int) -> list[str]:
    """The Procfile's web command for ``port``, without access logging, run without a shell."""
    line = next(
        line for line in (ROOT / "Procfile").read_text().splitlines() if line.startswith("web:")
    )
    command = line.split(":", 1)[1].replace("${PORT:-5000}", str(port))
    words = shlex.split(command.replace("--access-logfile -", ""))
    return [str(Path(sys.executable).parent / words[0]), *words[1:]]


def migrated_settings(redis_url: str, database_url: str) -> Settings:
    """Settings for a bench's web process, the database migrated."""
    settings = Settings(
        redis_url=redis_url, database_url=database_url, secret_key="bench-secret-key-0123456789"
    )
    migrate.upgrade(settings.database_url)
    return settings


def start_web(settings: Settings) -> tuple[subprocess.Popen, int]:
    """The Procfile's web process on a free port, once /healthz answers; and the port."""
    port = free_port()
    env = {**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT)}
    web = subprocess.Popen(web_command(port), env=env, cwd=ROOT)
    deadline = time.monotonic() + 30
    while True:
        try:
            if Client(port, "").get("/healthz")[0] == 200:
                return web, port
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_process(web)
            raise RuntimeError("the web process did not start")
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=40, help="per client and page")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="batch-web-bench-") as tmp:
        workdir = Path(tmp)
        redis = start_private_redis(workdir / "redis")
        settings = migrated_settings(redis.url, args.database_url or f"sqlite:///{workdir}/web.db")
        core = Core(settings)
        started = time.perf_counter()
        sample = seed_runs(core, args.runs)
        print(
            f"seeded {args.runs:,} runs x {CHUNKS} chunks in {time.perf_counter() - started:.1f}s"
        )
        seed_schedules(core, args.schedules)
        print(f"seeded {args.schedules:,} schedules")
        users.add_user(core, "bench", "bench-password")
        core.dispose()
        web, port = start_web(settings)
        try:
            cookie = sign_in(port, "bench", "bench-password")
            pages = {
                "healthz (baseline)": ["/healthz"],
                "overview": ["/"],
                "runs list": ["/runs/", "/runs/?status=failed", "/runs/?job=reports.sales_summary"],
                "runs, new filters": [
                    "/runs/?schedule=bench-000042",
                    "/runs/?trigger=cli",
                    f"/runs/?since={days_ago(30)}&until={days_ago(20)}",
                    f"/runs/?status=failed&trigger=user&since={days_ago(50)}",
                    f"/runs/?q={sample[0][:8]}",
                ],
                "schedule page": ["/schedules/bench-000042"],
                "run page": [f"/runs/{run_id}" for run_id in sample],
                "results page": ["/results/reports.sales_summary"],
                "schedules list": [
                    "/schedules/",
                    "/schedules/?q=00042",
                    "/schedules/?job=cleanups.purge_runs&enabled=yes&page=3",
                ],
            }
            load(port, cookie, [p for paths in pages.values() for p in paths], args.clients, 5)
            print(f"{args.clients} clients x {args.requests} requests per page, one web process")
            figures = {}
            for name, paths in pages.items():
                latencies = load(port, cookie, paths, args.clients, args.requests)
                figures[name] = (percentile(latencies, 0.5), percentile(latencies, 0.99))
            base_p99 = figures["healthz (baseline)"][1]
            for name, (p50, p99) in figures.items():
                print(
                    f"{name:<20} p50 {p50 * 1000:7.1f} ms  p99 {p99 * 1000:7.1f} ms"
                    f"  p99/healthz p99 {p99 / base_p99:5.1f}x"
                )
            worst = max(p99 for name, (_, p99) in figures.items() if "baseline" not in name)
            print(f"worst page p99: {worst * 1000:.1f} ms (target <= 100 ms)")
        finally:
            stop_process(web)
            redis.stop()


if __name__ == "__main__":
    main()
