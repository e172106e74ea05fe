"""Faults injected into real processes while runs are going, and how every run ends.

Usage: python bench/faults.py [--trials 5] [--faults NAME,...] [--baseline-trials N]
                              [--stuck-after 120] [--baseline-stuck-after 30]
                              [--broker-url URL] [--database-url URL]

Each trial starts a private redis-server and real worker nodes (``batch.lab.Lab``), submits
runs of ``bench.slow_sum`` (8 chunks of 1 s on a node of 2 processes), injects one fault and
watches SQL until every run has ended. A run ends **exact** (succeeded with the closed-form
sum), **failed** (visibly, with its error), **wrong** (succeeded with another sum: never
acceptable) or is **stuck** (still queued or running when the trial gives up).

Two sides run in the same invocation, on the same machine:
- ``batch``: the default settings (the recovery sweep every 3 s, a message counted lost after
  15 s in an empty queue, a node gone after 15 s without its announcement);
- ``chord only``: the same system with the sweep off, which is what Celery's chord and its
  redelivery do by themselves (the baseline). Its trials give up sooner: a run Celery alone
  would finish comes back after the broker's 3,600 s visibility timeout.

The table's times run from the fault to the last run's end (median and worst over trials).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from batch import migrate  # noqa: E402
from batch.lab import Lab, wait_until  # noqa: E402
from batch.models import RUNNING, SUCCEEDED  # noqa: E402
from batch.settings import Settings  # noqa: E402
from bench.synthetic_job import slow_sum_expected  # noqa: E402

JOB = "bench.slow_sum"
N = 8000


@dataclass
class Trial:
    """What one trial saw: the runs' outcomes and the seconds from the fault to the last end."""

    exact: int = 0
    failed: int = 0
    wrong: int = 0
    stuck: int = 0
    seconds: float | None = None


def pool_children(node: subprocess.Popen[bytes]) -> list[int]:
    """The pids of a node's pool processes."""
    found = subprocess.run(["pgrep", "-P", str(node.pid)], capture_output=True, text=True)
    return [int(pid) for pid in found.stdout.split()]


def one_run(lab: Lab) -> list[str]:
    return [lab.submit(JOB, {"n": N, "seconds": 1.0})]


def when_running(lab: Lab, run_ids: list[str]) -> None:
    wait_until(lambda: lab.chunks(run_ids[0], RUNNING) >= 1, timeout=60)


# Each fault: (submit, then inject); inject returns when the fault is done, at the fault time.
def child_kill(lab: Lab, node: subprocess.Popen[bytes]) -> list[str]:
    run_ids = one_run(lab)
    when_running(lab, run_ids)
    os.kill(random.choice(pool_children(node)), signal.SIGKILL)
    return run_ids


def child_kill_after_store(lab: Lab, node: subprocess.Popen[bytes]) -> list[str]:
    run_ids = one_run(lab)
    wait_until(lambda: lab.chunks(run_ids[0], SUCCEEDED) >= 1, timeout=60, poll=0.002)
    for pid in pool_children(node):
        os.kill(pid, signal.SIGKILL)
    return run_ids


def node_kill(lab: Lab, node: subprocess.Popen[bytes]) -> list[str]:
    run_ids = one_run(lab)
    when_running(lab, run_ids)
    lab.kill_node(node)
    return run_ids


def flushall(lab: Lab, node: subprocess.Popen[bytes]) -> list[str]:
    run_ids = one_run(lab)
    when_running(lab, run_ids)
    lab.core.redis.flushall()
    return run_ids


def redis_restart(lab: Lab, node: subprocess.Popen[bytes]) -> list[str]:
    run_ids = one_run(lab)
    when_running(lab, run_ids)
    lab.kill_redis()
    time.sleep(2)
    lab.start_redis()
    return run_ids


def burst_node_kill(lab: Lab, node: subprocess.Popen[bytes]) -> list[str]:
    run_ids = [lab.submit(JOB, {"n": 4000, "seconds": 0.2})]
    kill_at = time.monotonic() + random.uniform(0.04, 0.14)
    while len(run_ids) < 20:
        if time.monotonic() >= kill_at and node.poll() is None:
            lab.kill_node(node)
        run_ids.append(lab.submit(JOB, {"n": 4000, "seconds": 0.2}))
    if node.poll() is None:
        time.sleep(max(0.0, kill_at - time.monotonic()))
        lab.kill_node(node)
    return run_ids


def restart_in_backlog(lab: Lab, node: subprocess.Popen[bytes]) -> list[str]:
    run_ids = [lab.submit(JOB, {"n": 4000, "seconds": 0.3}) for _ in range(12)]
    when_running(lab, run_ids)
    node.send_signal(signal.SIGINT)  # Ctrl-C: a warm shutdown
    node.wait(timeout=60)
    return run_ids


FAULTS: dict[str, tuple[str, Callable[[Lab, subprocess.Popen[bytes]], list[str]], bool]] = {
    # name: (what, inject, start a fresh node 2 s after the fault)
    "child-kill": ("kill -9 of the pool process running a chunk", child_kill, False),
    "child-kill-after-store": (
        "kill -9 of the pool processes as a chunk's partial is stored",
        child_kill_after_store,
        False,
    ),
    "node-kill": ("kill -9 of the whole node, a fresh one 2 s later", node_kill, True),
    "flushall": ("FLUSHALL on Redis", flushall, False),
    "redis-restart": ("redis-server killed, restarted empty 2 s later", redis_restart, False),
    "burst-node-kill": (
        "20 runs, the node killed 40-140 ms after the first submit, a fresh one 2 s later",
        burst_node_kill,
        True,
    ),
    "restart-in-backlog": (
        "12 runs queued, the node stopped (Ctrl-C) mid-backlog, a fresh one 2 s later",
        restart_in_backlog,
        True,
    ),
}


def run_trial(
    base: Settings, fault: str, directory: Path, *, sweep: bool, stuck_after: float
) -> Trial:
    _, inject, fresh_node = FAULTS[fault]
    changes = {} if sweep else {"sweep_interval_seconds": 0}
    lab = Lab.open(base, directory, environ={**os.environ, "PYTHONPATH": str(ROOT)}, **changes)
    try:
        node = lab.start_node("node-a")
        run_ids = inject(lab, node)
        fault_at = time.monotonic()
        if fresh_node:
            time.sleep(2)
            lab.start_node("node-b")
        trial = Trial()
        ended: dict[str, float] = {}
        while len(ended) < len(run_ids) and time.monotonic() - fault_at < stuck_after:
            for run_id in run_ids:
                if run_id not in ended and lab.finished(run_id) is not None:
                    ended[run_id] = time.monotonic() - fault_at
            time.sleep(0.1)
        for run_id in run_ids:
            run = lab.finished(run_id)
            if run is None:
                trial.stuck += 1
            elif run.status != SUCCEEDED:
                trial.failed += 1
            elif run.result == {"sum": slow_sum_expected(run.params["n"])}:
                trial.exact += 1
            else:
                trial.wrong += 1
        if not trial.stuck:
            trial.seconds = max(ended.values())
        return trial
    finally:
        lab.close()


def summarize(trials: list[Trial]) -> str:
    times = [t.seconds for t in trials if t.seconds is not None]
    timing = f"{statistics.median(times):7.1f} {max(times):7.1f}" if times else f"{'-':>7} {'-':>7}"
    totals = [
        sum(getattr(t, name) for t in trials) for name in ("exact", "failed", "wrong", "stuck")
    ]
    return f"{len(trials):>6} " + " ".join(f"{v:>6}" for v in totals) + f" {timing}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--baseline-trials", type=int, default=None)
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--stuck-after", type=float, default=120)
    parser.add_argument("--baseline-stuck-after", type=float, default=30)
    parser.add_argument("--broker-url", default="")
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    faults = [name.strip() for name in args.faults.split(",") if name.strip()]
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults: {', '.join(sorted(unknown))} (known: {', '.join(FAULTS)})")
    baseline_trials = args.trials if args.baseline_trials is None else args.baseline_trials

    with tempfile.TemporaryDirectory(prefix="batch-faults-") as tmp:
        database = args.database_url or f"sqlite:///{Path(tmp) / 'faults.db'}"
        migrate.upgrade(database)
        base = Settings(
            database_url=database,
            broker_url=args.broker_url,
            job_modules=("bench.synthetic_job",),
        )
        print(f"broker: {args.broker_url or 'the private redis-server'}; database: {database}")
        header = f"{'fault':<24} {'side':<11} {'trials':>6} {'exact':>6} {'failed':>6} "
        header += f"{'wrong':>6} {'stuck':>6} {'median':>7} {'worst':>7}"
        print(header)
        for fault in faults:
            for side, sweep, trials, cap in (
                ("batch", True, args.trials, args.stuck_after),
                ("chord only", False, baseline_trials, args.baseline_stuck_after),
            ):
                results = []
                for index in range(trials):
                    directory = Path(tmp) / f"{fault}-{side.replace(' ', '-')}-{index}"
                    directory.mkdir()
                    results.append(run_trial(base, fault, directory, sweep=sweep, stuck_after=cap))
                if trials:
                    print(f"{fault:<24} {side:<11} {summarize(results)}", flush=True)
        print("times: seconds from the fault to the last run's end; '-' when a run was stuck")
        for name, (what, _, _) in FAULTS.items():
            if name in faults:
                print(f"  {name}: {what}")


if __name__ == "__main__":
    main()
