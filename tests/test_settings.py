"""Settings: the environment, and the services file a running ``batch dev`` leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from batch.settings import (
    DEFAULT_QUEUES,
    DEFAULT_REDIS_URL,
    VARIABLES,
    Settings,
    remove_services_file,
    write_services_file,
)

URLS = {
    "REDIS_URL": "redis://127.0.0.1:7001/0",
    "BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
    "DATABASE_URL": "sqlite:///elsewhere.db",
}


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_the_services_file_fills_what_the_environment_does_not_set(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    write_services_file(URLS, path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    settings = Settings.from_env({"DATABASE_URL": "sqlite:///mine.db"}, services_file=path)
    assert (settings.redis_url, settings.broker_url, settings.database_url) == (
        URLS["REDIS_URL"],
        URLS["BROKER_URL"],
        "sqlite:///mine.db",
    )


def test_a_services_file_of_a_process_gone_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text(json.dumps({"pid": dead_pid(), **URLS}))
    assert Settings.from_env({}, services_file=path).redis_url == DEFAULT_REDIS_URL


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"REDIS_URL": "redis://x"}'])
def test_a_broken_or_ownerless_services_file_is_ignored(tmp_path: Path, content: str) -> None:
    path = tmp_path / "services.json"
    path.write_text(content)
    assert Settings.from_env({}, services_file=path).redis_url == DEFAULT_REDIS_URL


def test_no_services_file_when_told_so(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    write_services_file(URLS, path)
    assert Settings.from_env({}, services_file=None).redis_url == DEFAULT_REDIS_URL


def test_only_the_writer_removes_the_services_file(tmp_path: Path) -> None:
    path = tmp_path / "services.json"
    path.write_text(json.dumps({"pid": os.getppid(), **URLS}))
    remove_services_file(path)
    assert path.exists()
    write_services_file(URLS, path)
    remove_services_file(path)
    assert not path.exists()


def test_port_sets_the_web_port() -> None:
    assert Settings.from_env({}, services_file=None).web_port == 5000
    assert Settings.from_env({"PORT": "5201"}, services_file=None).web_port == 5201


def test_every_setting_has_one_variable_and_goes_there_and_back() -> None:
    assert {field.name for field in fields(Settings)} == set(VARIABLES)
    settings = Settings(
        redis_url="redis://h:1/2", broker_url="amqp://x", database_url="sqlite:///x.db",
        secret_key="k" * 20, job_modules=("a.b", "c"), queues=("q1", "q2"),
        worker_concurrency=3, chunks_per_process=5, finish_deadline_seconds=7,
        reconcile_interval_seconds=11, beat_lock_timeout_seconds=13, sweep_interval_seconds=0.5,
        stall_seconds=17, chunk_max_attempts=19, worker_ttl_seconds=23, cookie_secure=True,
        login_attempts_per_minute=29, web_port=5201,
    )  # fmt: skip
    assert Settings.from_env(settings.as_env(), services_file=None) == settings
    assert Settings.from_env({"BATCH_QUEUES": " "}, services_file=None).queues == DEFAULT_QUEUES


def test_metrics_histograms_take_one_of_three_groupings() -> None:
    env = {"BATCH_METRICS_HISTOGRAMS": "job"}
    assert Settings.from_env(env, services_file=None).metrics_histograms == "job"
    assert Settings().metrics_histograms == "schedule"
    with pytest.raises(ValueError, match="must be one of schedule, job, off, not 'queue'"):
        Settings.from_env({"BATCH_METRICS_HISTOGRAMS": "queue"}, services_file=None)
