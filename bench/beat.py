"""Beat lateness, correctness and cost: batch's beat beside plain RedBeat, in the same run.

Usage: python bench/beat.py [--scenario spread,burst] [--sizes 1000,10000] [--huge]
                            [--repeat 1] [--window 150] [--warmup 10] [--bursts 2]
                            [--lead SECONDS] [--grace 10] [--redbeat-max-interval 0]
                            [--beat-loglevel INFO] [--systems redbeat,batch]

Each trial starts a fresh private redis-server (and, for batch, a fresh SQLite database with
the schedules in SQL), a beat process and a consumer process that pops every message from the
queue lists with raw Redis and records its receive time. Trials alternate (RedBeat, batch,
RedBeat, batch for ``--repeat 2``) so that machine noise hits both systems.

- **spread**: N interval schedules every 60 s, due times spread evenly over the minute, plus
  5 every 1 s. Measured over ``--window`` seconds, starting ``--warmup`` seconds after the first
  fire; batch's reconcile runs at its default interval, so its passes fall in the window.
- **burst**: N schedules due at the same second, every minute (cron ``* * * * *`` for batch,
  ``crontab()`` for RedBeat); ``--bursts`` bursts are measured.

Lateness is the consumer's receive time minus the fire time. batch's fire time is the
``scheduled_for`` in each message, checked against the schedule's own fire times (a mismatch,
a double or a missed fire is counted). Plain RedBeat counts an interval entry's next fire from
its last send, so its fire time is the previous send (the ``bench_sent_at`` header that
``bench/redbeat_app.py`` adds) plus the interval. Dispatch lateness is the send header minus
the fire time (batch stamps one header per batch of fires, before that batch's publish, so
for batch the receive time is the stricter measure). Beat CPU is utime+stime over the window
as % of one core; RSS is VmHWM. Both beats run at ``--loglevel INFO``, as the Procfile's.

Plain RedBeat 2.4.2 selects due entries up to ``now`` truncated to the whole second (its
``to_timestamp``), plus a peek of one entry: an entry due at a fraction of a second is sent in
the next second's tick unless it is the peeked one. That is RedBeat's own behaviour, measured
as it is; RedBeat runs with Celery's default max loop interval unless --redbeat-max-interval.
The process exits non-zero only when the harness fails, never on a missed target.
"""

from __future__ import annotations

import argparse
import base64
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import redis  # noqa: E402
from celery.schedules import crontab, schedule  # noqa: E402
from redbeat.decoder import RedBeatJSONEncoder  # noqa: E402
from redbeat.schedulers import ensure_conf  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from batch import migrate  # noqa: E402
from batch.celery_app import close_celery, create_celery  # noqa: E402
from batch.constants import QUEUE_REPORTS, SENT_AT_HEADER, TASK_START_RUN  # noqa: E402
from batch.core import Core  # noqa: E402
from batch.models import Schedule  # noqa: E402
from batch.processes import stop_process  # noqa: E402
from batch.redis_server import start_private_redis  # noqa: E402
from batch.settings import Settings  # noqa: E402
from bench import redbeat_app  # noqa: E402
from bench.measure import percentile, process_cpu_seconds, process_peak_rss_mb  # noqa: E402

JOB = "reports.sales_summary"
FAST_SCHEDULES = 5
#: A cron entry: fires at every minute boundary.
EVERY_MINUTE = 0
#: Messages popped per list per round trip: 10,000 a second in a few round trips.
POP_BATCH = 1000
#: kombu's Redis transport keeps a message with a priority in a list named queue+sep+step.
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)
LATE_SECONDS = 0.1
LATE = "late > 100 ms"
#: A fire received this much before its fire time was not that fire: a second send.
EARLY_SECONDS = 0.5
SYSTEMS = ("redbeat", "batch")


@dataclass
class Plan:
    """The schedules of one trial: name, first fire time (epoch s) and interval (0: cron)."""

    names: list[str]
    first: list[float]
    every: list[int]
    start: float  # the window, epoch seconds
    end: float

    def grid(self, index: int) -> list[float]:
        """The fire times of schedule ``index`` due inside the window."""
        period = self.every[index] or 60
        first = self.first[index]
        k = max(0, int((self.start - first) // period))
        times = []
        while (due := first + k * period) < self.end:
            if due >= self.start:
                times.append(due)
            k += 1
        return times


def spread_plan(size: int, first_fire: float, warmup: float, window: float) -> Plan:
    names = [f"spread-{i:06d}" for i in range(size)]
    first = [first_fire + 60 * i / size for i in range(size)]
    names += [f"fast-{j}" for j in range(FAST_SCHEDULES)]
    first += [first_fire + j / FAST_SCHEDULES for j in range(FAST_SCHEDULES)]
    every = [60] * size + [1] * FAST_SCHEDULES
    start = first_fire + warmup
    return Plan(names, first, every, start, start + window)


def burst_plan(size: int, first_fire: float, bursts: int) -> Plan:
    names = [f"burst-{i:06d}" for i in range(size)]
    return Plan(
        names, [first_fire] * size, [EVERY_MINUTE] * size, first_fire, first_fire + 60 * bursts
    )


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


# The two systems: how their schedules are written and their beat started.


def setup_redbeat(url: str, plan: Plan) -> tuple[list[str], dict[str, str], Any]:
    """Write plain RedBeat entries whose zset score is their first fire; the beat command."""
    app = redbeat_app.create_app(url)
    conf = ensure_conf(app)
    client = redis.Redis.from_url(url)
    with client.pipeline(transaction=False) as pipe:
        for name, first, every in zip(plan.names, plan.first, plan.every, strict=True):
            sched = crontab(app=app) if every == EVERY_MINUTE else schedule(every, app=app)
            last_run = first - (every or 30)
            definition = {
                "name": name,
                "task": TASK_START_RUN,
                "args": [],
                "kwargs": {"schedule": name},
                "options": {"queue": QUEUE_REPORTS},
                "schedule": sched,
                "enabled": True,
            }
            key = conf.key_prefix + name
            pipe.hset(key, "definition", json.dumps(definition, cls=RedBeatJSONEncoder))
            pipe.hset(
                key, "meta", json.dumps({"last_run_at": _utc(last_run)}, cls=RedBeatJSONEncoder)
            )
            pipe.zadd(conf.schedule_key, {key: first})
            if len(pipe) >= 3000:
                pipe.execute()
        pipe.execute()
    client.close()
    command = ["-A", "bench.redbeat_app", "beat", "--scheduler", "redbeat.RedBeatScheduler"]
    return command, {"BENCH_REDIS_URL": url}, conf


def setup_batch(url: str, workdir: Path, plan: Plan) -> tuple[list[str], dict[str, str], Any]:
    """Schedules in a fresh SQLite database; beat's reconcile writes them to RedBeat."""
    settings = Settings(redis_url=url, database_url=f"sqlite:///{workdir / 'batch.db'}")
    migrate.upgrade(settings.database_url)
    core = Core(settings)
    now = datetime.now(UTC)
    rows = []
    for name, first, every in zip(plan.names, plan.first, plan.every, strict=True):
        # Reconcile counts a new entry's first fire from updated_at.
        rows.append(
            {
                "name": name,
                "job": JOB,
                "params": {},
                "cron": "* * * * *" if every == EVERY_MINUTE else None,
                "timezone": "UTC",
                "interval_seconds": every or None,
                "enabled": True,
                "overlap": "allow",
                "queue": QUEUE_REPORTS,
                "description": "",
                "created_at": now,
                "updated_at": _utc(first - (every or 30)),
            }
        )
    with core.transaction() as session:
        session.execute(insert(Schedule), rows)
    celery = create_celery(settings, core)
    conf = celery.redbeat_conf
    close_celery(celery)
    command = ["-A", "batch.worker", "beat", "--scheduler", "batch.beat:BatchScheduler"]
    return command, settings.as_env(), conf


# The consumer: a process of its own that only pops and stamps; decoding comes afterwards.


def queue_keys(queues: tuple[str, ...]) -> list[str]:
    return [*queues, *(f"{q}{PRIORITY_SEP}{step}" for q in queues for step in PRIORITY_STEPS)]


def consume(url: str, keys: list[str], out: str, stop: Any, ready: Any) -> None:
    """Pop messages until ``stop`` is set; write (receive time, decoded fields) to ``out``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us, also on Ctrl-C
    client = redis.Redis.from_url(url)
    received: list[tuple[float, bytes]] = []
    ready.set()
    while not stop.is_set():
        with client.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.rpop(key, POP_BATCH)
            batches = pipe.execute()
        now = time.time()
        popped = False
        for items in batches:
            if items:
                popped = True
                received.extend((now, raw) for raw in items)
        if not popped:
            item = client.brpop(keys, timeout=0.05)
            if item is not None:
                received.append((time.time(), item[1]))
    client.close()
    Path(out).write_text(json.dumps([decode(at, raw) for at, raw in received]))


def decode(received_at: float, raw: bytes) -> list[Any]:
    """[receive time, task, schedule name, scheduled_for (epoch or None), sent (epoch or None)]."""
    envelope = json.loads(raw)
    headers = envelope.get("headers") or {}
    _args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    scheduled_for = kwargs.get("scheduled_for")
    sent = headers.get(SENT_AT_HEADER, headers.get(redbeat_app.SENT_AT_HEADER))
    if isinstance(sent, str):
        sent = datetime.fromisoformat(sent).timestamp()
    return [
        received_at,
        headers.get("task"),
        kwargs.get("schedule"),
        datetime.fromisoformat(scheduled_for).timestamp() if scheduled_for else None,
        sent,
    ]


# Analysis.


@dataclass
class Result:
    """What one trial measured."""

    system: str
    expected: int = 0
    received: int = 0
    missed: int = 0
    double: int = 0
    mismatched: int = 0
    lateness: list[float] = field(default_factory=list)
    dispatch: list[float] = field(default_factory=list)
    cpu_percent: float = 0.0
    rss_mb: float = 0.0
    ready_seconds: float = 0.0
    #: How beat ended, if it died during the measurement (its exit code and last error line).
    died: str = ""
    #: Per burst: (fire time, messages, first send, last send, last receive), epoch seconds.
    bursts: list[tuple[float, int, float, float, float]] = field(default_factory=list)

    def late(self) -> int:
        return sum(1 for value in self.lateness if value > LATE_SECONDS)

    def send_rate(self) -> float:
        """The slowest burst's messages per second, from its fire time to its last receive.

        Not from the send headers: batch stamps one per batch of fires, before its publish.
        """
        rates = [n / (received - due) for due, n, _, _, received in self.bursts]
        return min(rates, default=0.0)


def analyse(system: str, plan: Plan, records: list[list[Any]]) -> Result:
    """Match each message to its fire; lateness of the fires due inside the window."""
    index = {name: i for i, name in enumerate(plan.names)}
    by_name: dict[str, list[list[Any]]] = defaultdict(list)
    result = Result(system)
    for record in records:
        if record[2] in index:
            by_name[record[2]].append(record)
        else:
            result.mismatched += 1  # a message of no schedule of ours
    fires: list[tuple[float, float, float | None]] = []  # (due, received, sent)
    for name, i in index.items():
        messages = sorted(by_name.get(name, []), key=lambda record: record[0])
        if system == "redbeat" and plan.every[i] != EVERY_MINUTE:
            counts = _chain(plan, i, messages, fires)
        else:
            counts = _grid(system, plan, i, messages, fires)
        result.expected += counts[0]
        result.missed += counts[1]
        result.double += counts[2]
        result.mismatched += counts[3]
    for due, received, sent in fires:
        result.lateness.append(received - due)
        if sent is not None:
            result.dispatch.append(sent - due)
    result.received = len(fires)
    if plan.every[0] == EVERY_MINUTE:
        result.bursts = _bursts(fires)
    return result


def _grid(system: str, plan: Plan, i: int, messages: list[list[Any]], fires: list) -> tuple:
    """Fires on the schedule's own fire times: batch's ``scheduled_for``, RedBeat's crontab."""
    period = plan.every[i] or 60
    wanted = plan.grid(i)
    # Fire numbers, so that the window test is the same as ``wanted``'s, free of rounding.
    in_window = {round((fire - plan.first[i]) / period) for fire in wanted}
    seen: dict[int, int] = defaultdict(int)
    mismatched = 0
    for received, _task, _name, scheduled_for, sent in messages:
        if system == "batch":
            due = scheduled_for
        else:  # crontab: the minute boundary at or before the send
            due = (sent // 60) * 60
        k = round((due - plan.first[i]) / period)
        if abs(plan.first[i] + k * period - due) > 0.001:
            mismatched += 1
            continue
        seen[k] += 1
        if seen[k] == 1 and k in in_window:
            fires.append((due, received, sent))
    missed = sum(1 for k in in_window if k not in seen)
    double = sum(count - 1 for count in seen.values())  # anywhere: never acceptable
    return len(in_window), missed, double, mismatched


def _chain(plan: Plan, i: int, messages: list[list[Any]], fires: list) -> tuple:
    """RedBeat's interval entries: each fire is due one interval after the previous send."""
    due = plan.first[i]
    expected = missed = double = 0
    for received, _task, _name, _scheduled_for, sent in messages:
        if received < due - EARLY_SECONDS:
            double += 1
            continue
        if plan.start <= due < plan.end:
            expected += 1
            fires.append((due, received, sent))
        due = (sent if sent is not None else received) + plan.every[i]
    if plan.start <= due < plan.end:
        expected += 1
        missed += 1
    return expected, missed, double, 0


def _bursts(fires: list[tuple[float, float, float | None]]) -> list[tuple]:
    sends: dict[float, list[float]] = defaultdict(list)
    receives: dict[float, list[float]] = defaultdict(list)
    for due, received, sent in fires:
        sends[due].append(sent if sent is not None else received)
        receives[due].append(received)
    return [
        (due, len(sent), min(sent), max(sent), max(receives[due]))
        for due, sent in sorted(sends.items())
    ]


def burst_lines(result: Result) -> list[str]:
    return [
        f"{result.system}: burst at {_utc(due):%H:%M:%S}: {count:,} sent, first"
        f" +{ms(first - due)}, last +{ms(last - due)}; last received +{ms(received - due)}"
        f" ({count / (received - due):,.0f} msg/s from the fire time)"
        for due, count, first, last, received in result.bursts
    ]


# One trial.


def trial(system: str, scenario: str, size: int, args: argparse.Namespace, workdir: Path) -> Result:
    """Run one system on a fresh redis-server (and database) and measure it."""
    workdir.mkdir(parents=True)
    server = start_private_redis(workdir / "redis")
    beat: subprocess.Popen[bytes] | None = None
    consumer = None
    stop = multiprocessing.Event()
    try:
        lead = args.lead if args.lead is not None else 15 + size / 1000
        first_fire = time.time() + lead
        if scenario == "burst":
            first_fire = (first_fire // 60 + 1) * 60
            plan = burst_plan(size, first_fire, args.bursts)
        else:
            plan = spread_plan(size, first_fire, args.warmup, args.window)
        if system == "batch":
            command, env, conf = setup_batch(server.url, workdir, plan)
        else:
            command, env, conf = setup_redbeat(server.url, plan)
            env["BENCH_MAX_INTERVAL"] = str(args.redbeat_max_interval)
        out = workdir / "received.json"
        ready = multiprocessing.Event()
        keys = queue_keys(Settings().queues)
        consumer = multiprocessing.Process(
            target=consume, args=(server.url, keys, str(out), stop, ready), daemon=True
        )
        consumer.start()
        if not ready.wait(30):
            raise RuntimeError("the consumer did not start")
        started = time.time()
        with (workdir / "beat.log").open("wb") as log:
            beat = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "celery",
                    *command,
                    "--loglevel",
                    args.beat_loglevel,
                ],
                env={**os.environ, **env, "PYTHONPATH": str(ROOT)},
                cwd=workdir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        ready_at = wait_ready(server.url, conf, len(plan.names), beat, workdir / "beat.log")
        if ready_at > plan.first[0] - 1:
            late = ready_at - plan.first[0]
            print(f"  warning: {system} beat ready {late:+.1f}s after the first fire", flush=True)
        cpu = rss = 0.0
        if sleep_until(plan.start, beat):
            cpu_start = process_cpu_seconds(beat.pid)
            if sleep_until(plan.end, beat):
                cpu = process_cpu_seconds(beat.pid) - cpu_start
                rss = process_peak_rss_mb(beat.pid)
        # A beat that died is a result, not a harness failure: what it sent is still counted.
        while time.time() < plan.end + args.grace:
            time.sleep(0.5)
        stop.set()
        consumer.join(120)
        if consumer.exitcode != 0:
            raise RuntimeError(f"the consumer failed (exit {consumer.exitcode})")
        result = analyse(system, plan, json.loads(out.read_text()))
        result.cpu_percent = 100 * cpu / (plan.end - plan.start)
        result.rss_mb = rss
        result.ready_seconds = ready_at - started
        if beat.poll() is not None:
            result.died = died(beat, workdir / "beat.log")
            print(f"  {system} beat died during the measurement: {result.died}", flush=True)
        return result
    finally:
        stop.set()
        if beat is not None and beat.poll() is None:
            stop_process(beat)
        if consumer is not None and consumer.is_alive():
            consumer.join(30)
            if consumer.is_alive():
                consumer.kill()
        server.stop()


def wait_ready(url: str, conf: Any, count: int, beat: subprocess.Popen[bytes], log: Path) -> float:
    """When beat holds its lock and its zset holds every schedule."""
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 600
        while not (client.exists(conf.lock_key) and client.zcard(conf.schedule_key) >= count):
            if beat.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"beat did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)
        return time.time()
    finally:
        client.close()


def sleep_until(moment: float, beat: subprocess.Popen[bytes]) -> bool:
    """Sleep until ``moment``; False as soon as beat has exited."""
    while (left := moment - time.time()) > 0:
        if beat.poll() is not None:
            return False
        time.sleep(min(left, 0.5))
    return beat.poll() is None


def died(beat: subprocess.Popen[bytes], log: Path) -> str:
    """Beat's exit code and the last error line of its log."""
    errors = [line for line in log.read_text().splitlines() if "Error" in line]
    return f"exit {beat.returncode}" + (f": {errors[-1].strip()[:160]}" if errors else "")


# Reports.


def ms(value: float) -> str:
    return f"{value * 1000:,.0f} ms" if value < 10 else f"{value:,.1f} s"


def summary(result: Result) -> dict[str, str]:
    late = result.lateness or [0.0]
    sent = result.dispatch or [0.0]
    return {
        "lateness p50": ms(percentile(late, 0.5)),
        "lateness p99": ms(percentile(late, 0.99)),
        "lateness max": ms(max(late)),
        LATE: f"{result.late():,}",
        "dispatch p50": ms(percentile(sent, 0.5)),
        "dispatch p99": ms(percentile(sent, 0.99)),
        "dispatch max": ms(max(sent)),
        "sent <= 1 s": f"{sum(1 for d in sent if d <= 1.0):,}",
        "received <= 1 s": f"{sum(1 for d in late if d <= 1.0):,}",
        "send rate (min)": f"{result.send_rate():,.0f}/s",
        "fires expected": f"{result.expected:,}",
        "fires received": f"{result.received:,}",
        "missed": f"{result.missed:,}",
        "double": f"{result.double:,}",
        "mismatched": f"{result.mismatched:,}",
        "beat CPU": f"{result.cpu_percent:.1f} %",
        "beat peak RSS": f"{result.rss_mb:.0f} MB",
        "beat ready after": f"{result.ready_seconds:.1f} s",
        "beat died": "yes" if result.died else "no",
    }


def report(scenario: str, size: int, results: list[Result]) -> list[str]:
    """Print the side-by-side table; return its markdown rows for docs/performance.md."""
    print(
        f"\n{scenario} {size:,} schedules"
        + (f" + {FAST_SCHEDULES} every 1 s" if scenario == "spread" else "")
    )
    systems = [r.system for r in results]
    columns = [f"{system} #{systems[: n + 1].count(system)}" for n, system in enumerate(systems)]
    table = [summary(r) for r in results]
    print(f"  {'':<18}" + "".join(f"{c:>14}" for c in columns))
    for metric in table[0]:
        print(f"  {metric:<18}" + "".join(f"{row[metric]:>14}" for row in table))
    for r in results:
        for line in burst_lines(r):
            print(f"  {line}")
    by_system = {s: [r for r in results if r.system == s] for s in SYSTEMS}

    def median(system: str, value: Any) -> float:
        return statistics.median(value(r) for r in by_system[system])

    def p99(r: Result) -> float:
        return percentile(r.lateness or [0.0], 0.99)

    for name, value in (("lateness p99", p99), ("beat CPU", lambda r: r.cpu_percent)):
        if not (by_system["redbeat"] and by_system["batch"]):
            break  # one system measured (--systems): no ratio
        base = median("redbeat", value)
        ratio = median("batch", value) / base if base else float("inf")
        print(f"  batch/redbeat {name}: {ratio:.2f}x")
    rows = []
    for r in results:
        s = summary(r)
        cells = [f"{size:,}", "RedBeat 2.4.2" if r.system == "redbeat" else "batch"]
        if scenario == "burst":
            cells += [s["dispatch p50"], s["dispatch p99"], s["dispatch max"]]
            cells += [s["sent <= 1 s"], s["received <= 1 s"], s["send rate (min)"]]
            cells += [s["lateness p99"], s["lateness max"]]
        else:
            cells += [s["lateness p50"], s["lateness p99"], s["lateness max"], s[LATE]]
        cells += [s["fires expected"], f"{r.missed} / {r.double}", s["beat CPU"]]
        cells += [s["beat peak RSS"]]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


MARKDOWN_HEADS = {
    "spread": "| schedules | system | lateness p50 | p99 | max | late > 100 ms | fires "
    "| missed / double | beat CPU | beat peak RSS |",
    "burst": "| schedules | system | dispatch p50 | p99 | max | sent within 1 s "
    "| received within 1 s | send rate | received p99 | received max | fires "
    "| missed / double | beat CPU | beat peak RSS |",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", default="spread,burst", help="spread, burst or both")
    parser.add_argument("--sizes", default="1000,10000", help="schedule counts, comma-separated")
    parser.add_argument("--huge", action="store_true", help="also 100,000 (slow to set up)")
    parser.add_argument("--repeat", type=int, default=1, help="trials per system, alternated")
    parser.add_argument("--window", type=float, default=150, help="spread: seconds measured")
    parser.add_argument("--warmup", type=float, default=10, help="spread: after the first fire")
    parser.add_argument("--bursts", type=int, default=2, help="burst: bursts measured")
    parser.add_argument(
        "--lead", type=float, default=None, help="seconds to the first fire (15 + N/1000)"
    )
    parser.add_argument("--grace", type=float, default=10, help="wait for late fires after")
    parser.add_argument(
        "--redbeat-max-interval",
        type=float,
        default=0,
        help="plain RedBeat's beat_max_loop_interval (0: Celery's default)",
    )
    parser.add_argument("--beat-loglevel", default="INFO", help="both beats' --loglevel")
    parser.add_argument(
        "--systems", default=",".join(SYSTEMS), help="which beats, comma-separated (both)"
    )
    args = parser.parse_args()
    # A SIGTERM ends the run as Ctrl-C does: through the finally blocks that stop every process.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sizes = [int(size) for size in args.sizes.split(",")] + ([100_000] if args.huge else [])
    scenarios = [name.strip() for name in args.scenario.split(",")]
    systems = [name.strip() for name in args.systems.split(",")]
    if unknown := set(systems) - set(SYSTEMS):
        parser.error(f"unknown system(s) {', '.join(sorted(unknown))}; choose from {SYSTEMS}")

    markdown: dict[str, list[str]] = {}
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(
        f"cores {os.cpu_count()}  load average {load}  python {sys.version.split()[0]}", flush=True
    )
    with tempfile.TemporaryDirectory(prefix="batch-bench-beat-") as tmp:
        for scenario in scenarios:
            for size in sizes:
                results = []
                for n in range(args.repeat):
                    for system in systems:
                        print(f"{scenario} {size:,}: {system} #{n + 1} ...", flush=True)
                        workdir = Path(tmp) / f"{scenario}-{size}-{system}-{n}"
                        results.append(trial(system, scenario, size, args, workdir))
                markdown.setdefault(scenario, []).extend(report(scenario, size, results))
    for scenario, rows in markdown.items():
        head = MARKDOWN_HEADS[scenario]
        print(f"\nFor docs/performance.md ({scenario}):\n")
        print("\n".join([head, "|" + "---|" * head.count(" | ") + "---|", *rows]))


if __name__ == "__main__":
    main()
