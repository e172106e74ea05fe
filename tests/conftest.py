"""Shared fixtures: a private redis-server, a real Celery worker and a fresh database."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from flask import Flask
from sqlalchemy import delete, func, select

from batch import migrate, run_stats, users
from batch.celery_app import close_celery, create_celery
from batch.core import Core
from batch.db import utcnow
from batch.lab import Lab
from batch.models import (
    FINISHED_STATES,
    Alert,
    AlertDelivery,
    AlertEvent,
    ApiToken,
    AuditEntry,
    Backfill,
    Order,
    Run,
    RunChunk,
    RunStat,
    Schedule,
    User,
)
from batch.processes import start_worker, stop_process
from batch.redis_server import PrivateRedis, start_private_redis
from batch.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
TEST_JOB_MODULES = ("tests.jobs_for_tests",)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateRedis]:
    server = start_private_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def settings(redis_server: PrivateRedis, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    database = tmp_path_factory.mktemp("db") / "batch.db"
    return Settings(
        redis_url=redis_server.url,
        database_url=os.environ.get("TEST_DATABASE_URL", f"sqlite:///{database}"),
        broker_url=os.environ.get("TEST_BROKER_URL", ""),
        job_modules=TEST_JOB_MODULES,
        secret_key="test-secret-key-not-for-production",
        finish_deadline_seconds=30,
        # The recovery sweep acts on every going run in SQL: only the recovery tests, with
        # workers of their own, turn it on (tests/test_recovery.py).
        sweep_interval_seconds=0,
    )


def settings_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a subprocess read ``settings``."""
    return {**os.environ, **settings.as_env(), "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="session")
def migrated(settings: Settings) -> Settings:
    migrate.upgrade(settings.database_url)
    return settings


@pytest.fixture
def core(migrated: Settings) -> Iterator[Core]:
    """A core over an empty database (every table emptied before the test)."""
    core = Core(migrated)
    with core.transaction() as session:
        tables = (AlertDelivery, AlertEvent, Alert, RunChunk, Run, Backfill, AuditEntry, Schedule)
        for model in (*tables, RunStat, Order, User, ApiToken):
            session.execute(delete(model))
    yield core
    core.dispose()


@pytest.fixture
def celery_app(core: Core) -> Iterator[Celery]:
    app = create_celery(core.settings, core)
    yield app
    close_celery(app)


@pytest.fixture(scope="session")
def worker(migrated: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One real worker for the session, consuming every queue; yields its log path."""
    log_path = tmp_path_factory.mktemp("worker") / "worker.log"
    process = start_worker(
        settings_env(migrated), log_path, name="test-worker", redis_url=migrated.redis_url, cwd=ROOT
    )
    yield log_path
    stop_process(process)


def wait_for_run(core: Core, run_id: str, timeout: float = 60) -> Run:
    """Poll SQL until the run reaches a finished state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with core.transaction() as session:
            run = session.get(Run, run_id)
            if run is not None and run.status in FINISHED_STATES:
                return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s")


ADMIN = ("admin", "correct horse battery")


def own_database(directory: Path) -> str:
    """A migrated SQLite database of a lab's own. The suite's worker (its run driver, its
    sweep) acts on every backfill and released fire in the suite's database, through the
    suite's broker: a lab whose backfills or buffered fires must be driven by its own nodes
    keeps them apart."""
    url = f"sqlite:///{directory / 'lab.db'}"
    migrate.upgrade(url)
    return url


def run_totals(core: Core, job: str) -> Counter[tuple[str, str]]:
    """The runs of ``job`` counted for /metrics (run_stats): (schedule, status) -> runs."""
    with core.reading() as session:
        totals = run_stats.read(session)
    return Counter(
        {
            (key.schedule, label): int(value)
            for key, of in totals.items()
            if key.job == job
            for (series, label), value in of.counts.items()
            if series == run_stats.RUNS
        }
    )


def runs_ended(core: Core, job: str, since: datetime) -> Counter[tuple[str, str]]:
    """The runs of ``job`` made since ``since`` that ended, in SQL: (schedule, status) -> runs."""
    query = (
        select(Run.schedule_name, Run.status, func.count())
        .where(Run.job == job, Run.created_at >= since, Run.status.in_(FINISHED_STATES))
        .group_by(Run.schedule_name, Run.status)
    )
    with core.reading() as session:
        return Counter(
            {(schedule or "", status): n for schedule, status, n in session.execute(query)}
        )


@contextmanager
def counted_lab(core: Core, directory: Path, job: str, **changes: Any) -> Iterator[Lab]:
    """A lab of the suite's settings with ``changes``, its nodes importing the project; on
    leaving, closed, once each run of ``job`` that ended in it was checked counted once."""
    lab = Lab.open(
        core.settings, directory, environ={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        **changes,
    )  # fmt: skip
    try:
        with each_end_counted_once(lab.core, job):
            yield lab
    finally:
        lab.close()


@contextmanager
def each_end_counted_once(core: Core, job: str) -> Iterator[None]:
    """Around a lab's test: each run of ``job`` that ended meanwhile is counted once in the
    /metrics totals, by schedule and status, whatever the test killed or redelivered."""
    before, since = run_totals(core, job), utcnow()
    yield
    assert run_totals(core, job) - before == runs_ended(core, job, since)


@pytest.fixture
def app(core: Core) -> Iterator[Flask]:
    from batch.web import create_app

    app = create_app(core.settings)
    app.config["TESTING"] = True
    core.redis.delete(*core.redis.keys("batch:login-attempts:*") or ["-"])
    yield app
    close_celery(app.extensions["batch_celery"])


@pytest.fixture
def admin(core: Core) -> tuple[str, str]:
    users.add_user(core, *ADMIN)
    return ADMIN


def pytest_report_header() -> str:
    """Which broker and database this run talks to (the default pair or the production one)."""
    broker = os.environ.get("TEST_BROKER_URL") or "a private redis-server"
    database = os.environ.get("TEST_DATABASE_URL") or "a fresh SQLite file"
    return f"batch: broker {broker.split('@')[-1]}, database {database.split('@')[-1]}"
