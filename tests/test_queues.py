"""Configured queues (BATCH_QUEUES): validation, routing and capacity-sized chunks on any queue."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select

from batch import capacity, runs, users
from batch.celery_app import close_celery, create_celery
from batch.constants import DEFAULT_QUEUES
from batch.core import Core
from batch.exceptions import InvalidSchedule
from batch.jobs import JobRegistry
from batch.lab import wait_until
from batch.models import AuditEntry, RunChunk, Schedule
from batch.processes import start_worker, stop_process
from batch.schedules import validate_schedule
from batch.settings import Settings
from tests.conftest import ADMIN, ROOT, settings_env, wait_for_run
from tests.jobs_for_queues import TEAM_QUEUE
from tests.web.conftest import csrf_token

# No "default" queue at all, and the first one is not where the shipped jobs go: nothing may
# assume the three queues of the default configuration. The shipped jobs need theirs.
QUEUES = ("light", TEAM_QUEUE, "heavy", "reports", "cleanups")
QUEUE_MODULES = ("tests.jobs_for_queues",)
CHUNKS_PER_PROCESS = 5


def sum_of_cubes(n: int) -> int:
    """0**3 + 1**3 + ... + (n-1)**3, by the closed form."""
    return (n * (n - 1) // 2) ** 2


@pytest.fixture
def team_core(core: Core) -> Iterator[Core]:
    """A core on the configured QUEUES with the jobs of tests/jobs_for_queues.py."""
    settings = dataclasses.replace(
        core.settings,
        queues=QUEUES,
        job_modules=QUEUE_MODULES,
        chunks_per_process=CHUNKS_PER_PROCESS,
    )
    team = Core(settings)
    yield team
    team.dispose()


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("default,team a", "'team a' is not a queue name"),
        ("default,heavy,default", "'default' is listed twice"),
        ("default,-heavy", "'-heavy' is not a queue name"),
        ("default,heavy/1", "'heavy/1' is not a queue name"),
        ("amq.heavy", "'amq.heavy' is reserved by the broker"),
        ("unacked", "'unacked' is reserved by the broker"),
        ("a" * 101, f"'{'a' * 101}' is not a queue name"),
    ],
)
def test_bad_BATCH_QUEUES_is_an_error_naming_the_queue(value: str, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"BATCH_QUEUES: {problem}")):
        Settings.from_env({"BATCH_QUEUES": value}, services_file=None)


def test_BATCH_QUEUES_sets_the_queues_and_the_first_is_the_default() -> None:
    settings = Settings.from_env(
        {"BATCH_QUEUES": " light, team-a ,heavy.1,x_2 "}, services_file=None
    )
    assert settings.queues == ("light", "team-a", "heavy.1", "x_2")
    assert settings.default_queue == "light"
    unset = Settings.from_env({}, services_file=None)
    assert unset.queues == DEFAULT_QUEUES == ("default", "reports", "cleanups")
    assert unset.default_queue == "default"


def test_the_celery_app_declares_and_consumes_the_configured_queues(team_core: Core) -> None:
    app = create_celery(team_core.settings, team_core)
    try:
        assert [queue.name for queue in app.conf.task_queues] == list(QUEUES)
        assert [queue.routing_key for queue in app.conf.task_queues] == list(QUEUES)
        assert app.conf.task_default_queue == "light"
        # What a worker started without --queues consumes (the Procfile's worker).
        assert list(app.amqp.queues.consume_from) == list(QUEUES)
    finally:
        close_celery(app)


def test_a_job_on_a_queue_that_is_not_configured_fails_at_start(core: Core) -> None:
    settings = dataclasses.replace(core.settings, job_modules=QUEUE_MODULES)
    message = (
        "job 'tests.sum_cubes_team_a' is declared on queue 'team-a', which is not configured: "
        "add it to BATCH_QUEUES (now default,reports,cleanups)"
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        Core(settings).jobs  # noqa: B018
    # The shipped jobs are held to the same rule.
    with pytest.raises(ValueError, match=r"job 'cleanups\.purge_runs' .* queue 'cleanups'"):
        JobRegistry(queues=("default", "reports"))


def test_a_job_that_declares_no_queue_gets_the_first_configured_queue(team_core: Core) -> None:
    assert team_core.jobs.get("tests.sum_cubes").queue == "light"
    assert team_core.jobs.get("tests.sum_cubes_team_a").queue == TEAM_QUEUE
    assert team_core.jobs.get("reports.sales_summary").queue == "reports"
    # The default is per registry: another configuration gives the same class another queue.
    other = JobRegistry(QUEUE_MODULES, queues=("heavy", *QUEUES[1:]))
    assert other.get("tests.sum_cubes").queue == "heavy"


def test_a_schedule_takes_any_configured_queue_and_refuses_others(team_core: Core) -> None:
    schedule = {"name": "team", "job": "tests.sum_cubes", "interval_seconds": 60}
    spec = validate_schedule(team_core, {**schedule, "queue": TEAM_QUEUE})
    assert spec.queue == TEAM_QUEUE
    assert validate_schedule(team_core, schedule).queue is None
    with pytest.raises(InvalidSchedule) as refused:
        validate_schedule(team_core, {**schedule, "queue": "default"})
    assert refused.value.errors == {
        "queue": "must be 'light', 'team-a', 'heavy', 'reports' or 'cleanups', not 'default'"
    }


@pytest.fixture
def team_app(team_core: Core) -> Iterator[Flask]:
    from batch.web import create_app

    app = create_app(team_core.settings)
    app.config["TESTING"] = True
    yield app
    close_celery(app.extensions["batch_celery"])


def count(core: Core, model: type) -> int:
    with core.reading() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_the_api_refuses_a_schedule_on_an_unconfigured_queue_and_writes_nothing(
    team_app: Flask, team_core: Core
) -> None:
    api = team_app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {users.add_token(team_core, 'tests')}"
    for key in team_core.redis.scan_iter(match="batch:redbeat:*"):
        team_core.redis.delete(key)
    schedule = {"name": "team", "job": "tests.sum_cubes", "interval_seconds": 60}

    response = api.post("/api/schedules", json={**schedule, "queue": "team-b"})
    assert response.status_code == 400
    assert list(response.json["errors"]) == ["queue"]
    assert response.json["errors"]["queue"] == (
        "must be 'light', 'team-a', 'heavy', 'reports' or 'cleanups', not 'team-b'"
    )
    assert count(team_core, Schedule) == count(team_core, AuditEntry) == 0
    assert list(team_core.redis.scan_iter(match="batch:redbeat:*")) == []

    response = api.post("/api/schedules", json={**schedule, "queue": TEAM_QUEUE})
    assert response.status_code == 201, response.json
    assert response.json["queue"] == TEAM_QUEUE
    api.delete("/api/schedules/team")


def test_the_schedule_form_offers_the_configured_queues(team_app: Flask, team_core: Core) -> None:
    users.add_user(team_core, *ADMIN)
    client = team_app.test_client()
    client.post(
        "/login",
        data={"name": ADMIN[0], "password": ADMIN[1], "csrf_token": csrf_token(client)},
    )
    page = client.get("/schedules/new").get_data(as_text=True)
    assert queue_options(page) == ["", *QUEUES]
    # A stored queue that has since left BATCH_QUEUES stays selected, not silently dropped.
    with team_core.transaction() as session:
        session.add(Schedule(name="old", job="tests.sum_cubes", params={}, interval_seconds=60,
                             queue="retired"))  # fmt: skip
    page = client.get("/schedules/old/edit").get_data(as_text=True)
    assert queue_options(page) == ["", *QUEUES, "retired"]
    assert '<option value="retired" selected>' in page


def queue_options(page: str) -> list[str]:
    """The values of the schedule form's queue select."""
    select_html = re.search(r'<select id="queue".*?</select>', page, re.S).group(0)
    return re.findall(r'<option value="([^"]*)"', select_html)


@pytest.fixture
def team_workers(team_core: Core, tmp_path: Path) -> Iterator[dict[str, Path]]:
    """Two real workers on QUEUES: one started without --queues, one consuming only `heavy`."""
    env = {
        **settings_env(team_core.settings),
        "BATCH_QUEUES": ",".join(QUEUES),
        "BATCH_CHUNKS_PER_PROCESS": str(CHUNKS_PER_PROCESS),
    }
    logs = {"all-queues": tmp_path / "all-queues.log", "heavy-only": tmp_path / "heavy-only.log"}
    processes = []
    try:
        for name, queues, concurrency in (("heavy-only", ("heavy",), 2), ("all-queues", None, 3)):
            processes.append(
                start_worker(
                    env, logs[name], name=name, queues=queues, concurrency=concurrency,
                    redis_url=team_core.settings.redis_url, cwd=ROOT,
                )
            )  # fmt: skip
        yield logs
    finally:
        for process in processes:
            stop_process(process)


def announced(core: Core, name: str) -> dict:
    """What the worker node ``name`` announced in Redis (its CapacityAnnouncer)."""
    workers = capacity.online_workers(core.redis)
    (host,) = [host for host in workers if host.startswith(f"{name}@")]
    return {key: value for key, value in workers[host].items() if key != "since"}


def stored_chunks(core: Core, run_id: str) -> int:
    with core.reading() as session:
        return session.scalar(select(func.count()).where(RunChunk.run_id == run_id))


def test_runs_are_routed_to_their_configured_queue_and_sized_by_its_capacity(
    core: Core, team_core: Core, team_workers: dict[str, Path]
) -> None:
    # With no --queues a worker consumes every configured queue; the other only its own.
    assert announced(core, "all-queues") == {"concurrency": 3, "queues": sorted(QUEUES)}
    assert announced(core, "heavy-only") == {"concurrency": 2, "queues": ["heavy"]}
    team_processes = sum(
        worker["concurrency"]
        for worker in capacity.online_workers(core.redis).values()
        if TEAM_QUEUE in worker["queues"]
    )
    assert team_processes == 3

    celery = create_celery(team_core.settings, team_core)
    try:
        n = 200_000
        team_run = runs.submit_run(
            team_core, celery, "tests.sum_cubes_team_a", {"n": n}, trigger="test"
        )
        default_run = runs.submit_run(
            team_core, celery, "tests.sum_cubes", {"n": n}, trigger="test"
        )
        team, default = wait_for_run(core, team_run), wait_for_run(core, default_run)
    finally:
        close_celery(celery)

    assert (team.status, team.queue, team.error) == ("succeeded", TEAM_QUEUE, None)
    assert team.chunk_count == team_processes * CHUNKS_PER_PROCESS == 15
    assert stored_chunks(core, team_run) == 15
    assert team.result == {"sum": sum_of_cubes(n)}
    # A job that declares no queue runs on the first configured one.
    assert (default.status, default.queue, default.chunk_count) == ("succeeded", "light", 15)
    assert default.result == {"sum": sum_of_cubes(n)}

    # Every message of both runs went to the node consuming their queues, none to `heavy`.
    # A chunk's task is logged by its shadow name, "run <id> chunk <i>"; the last chunk of a
    # run stores the result before Celery logs its task's success.
    chunk_done = r"Task run \S+ chunk \d+\[[^\]]+\] succeeded"
    log = team_workers["all-queues"]
    wait_until(lambda: len(re.findall(chunk_done, log.read_text())) >= 30, timeout=10)
    all_log = log.read_text()
    assert len(re.findall(chunk_done, all_log)) == 30
    assert len(re.findall(r"Task batch\.start_run\[[^\]]+\] succeeded", all_log)) == 2
    assert not re.search(r"Task (batch\.|run )", team_workers["heavy-only"].read_text())
