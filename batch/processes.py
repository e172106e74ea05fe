"""Start a real ``celery worker`` subprocess and wait until it is ready (tests, benchmarks)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import redis

from batch.capacity import online_workers


def start_worker(
    env: Mapping[str, str],
    log_path: Path,
    *,
    name: str,
    redis_url: str,
    queues: tuple[str, ...] | None = None,
    concurrency: int = 2,
    cwd: Path | None = None,
    timeout: float = 60,
) -> subprocess.Popen[bytes]:
    """Start ``celery -A batch.worker worker`` and wait until it announces its capacity.

    Without ``queues`` the worker consumes every queue of its ``BATCH_QUEUES``, as the
    Procfile's worker does.
    """
    selected = ["--queues", ",".join(queues)] if queues else []
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "batch.worker", "worker",
                "--hostname", f"{name}@%h", *selected,
                "--concurrency", str(concurrency), "--loglevel", "INFO",
                "--without-gossip", "--without-mingle",
            ],
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            # A group of its own: a node (main process and pool) can be stopped as one.
            start_new_session=True,
        )  # fmt: skip
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        deadline = time.monotonic() + timeout
        while not any(host.startswith(f"{name}@") for host in online_workers(client)):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"worker did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
    finally:
        client.close()
    return process


def start_beat(env: Mapping[str, str], log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``celery beat`` with batch's scheduler, as the Procfile does, logging to
    ``log_path``."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "batch.worker", "beat",
                "--scheduler", "batch.beat:BatchScheduler", "--loglevel", "INFO",
                "--pidfile", "",
            ],
            env=dict(env),
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop_process(process: subprocess.Popen[bytes], timeout: float = 20) -> None:
    """Ask a process to stop (SIGTERM), kill it if it takes longer than ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def kill_node(process: subprocess.Popen[bytes]) -> None:
    """``kill -9`` a worker node started by start_worker: its main process and its pool."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
