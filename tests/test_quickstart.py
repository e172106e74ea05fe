"""The README's quickstart as a new user lives it, on a fresh copy of the project.

``make run`` starts with an unreachable ``REDIS_URL`` (so it starts a private redis-server)
and a ``PORT`` of our choosing; then the README's "Using it" commands run from the same
directory with no environment set; then Ctrl-C; then ``make run`` again, which must keep
the schedule an operator disabled disabled.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import func, select

from batch.capacity import online_workers
from batch.core import Core
from batch.lab import wait_until
from batch.models import Run
from batch.redis_server import free_port, is_reachable
from batch.settings import SERVICE_VARIABLES, SERVICES_FILE, Settings, read_services_file
from tests.conftest import ROOT
from tests.test_jobs import sales_by_sql

VENV = ROOT / ".venv"
#: Variables a user's shell does not have: the copy must find its system by itself.
FOREIGN = {*SERVICE_VARIABLES, "PORT", "BATCH_JOB_MODULES", "SECRET_KEY", "PYTHONPATH"}


def fresh_copy(target: Path) -> Path:
    """The project's tracked and new files, as a clone would have them (no instance/)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def user_env() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in FOREIGN}


class MakeRun:
    """``make run`` in the background, in its own process group, as a terminal runs it."""

    def __init__(self, project: Path, port: int, log: Path) -> None:
        self.project, self.port, self.log = project, port, log
        env = {**user_env(), "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "PORT": str(port)}
        with log.open("ab") as out:
            # -o: the virtualenv of this checkout is already installed; use it as is.
            self.process = subprocess.Popen(
                ["make", "--no-print-directory", "-o", f"{VENV}/bin/.installed", "run",
                 f"VENV={VENV}"],
                cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def wait_until_serving(self, timeout: float = 90) -> dict[str, str]:
        """Until the web process answers on our port and a worker announced itself.

        Returns the services file ``batch dev`` wrote.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            services = read_services_file(self.project / SERVICES_FILE)
            if services and self.healthz() == 200 and self.workers(services["REDIS_URL"]):
                return services
            time.sleep(0.3)
        raise AssertionError(f"make run did not come up:\n{self.output()[-4000:]}")

    @staticmethod
    def workers(redis_url: str) -> int:
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        try:
            return len(online_workers(client))
        except redis.RedisError:
            return 0
        finally:
            client.close()

    def healthz(self) -> int | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                return r.status
        except OSError:
            return None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def interrupt(self) -> str:
        """Ctrl-C: SIGINT to the whole foreground group; returns what was printed."""
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            raise
        return self.output()


def batch(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A README command, run from the project directory with a user's environment."""
    return subprocess.run(
        [str(VENV / "bin" / "batch"), *args],
        cwd=project, env=user_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    yield fresh_copy(tmp_path / "batch")


@pytest.mark.timeout(400)
def test_quickstart_then_the_cli_then_ctrl_c_then_again(project: Path, tmp_path: Path) -> None:
    port = free_port()
    first = MakeRun(project, port, tmp_path / "make-run-1.log")
    try:
        services = first.wait_until_serving()
        # gunicorn's control socket belongs to this checkout, not to ~/.gunicorn.
        assert (project / "instance" / "gunicorn.ctl").is_socket()
        assert "started a private redis-server" in first.output()

        jobs = batch(project, "jobs")
        assert jobs.returncode == 0 and "reports.sales_summary" in jobs.stdout, jobs.stderr
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
        since, until = hour - timedelta(days=7), hour - timedelta(days=1)
        ran = batch(
            project, "run", "reports.sales_summary", "-p", f"since={since.isoformat()}",
            "-p", f"until={until.isoformat()}", "--wait", "--json",
        )  # fmt: skip
        assert ran.returncode == 0, ran.stdout + ran.stderr
        outcome = json.loads(ran.stdout)
        assert (outcome["status"], outcome["error"]) == ("succeeded", None)
        database = project_core(project)
        try:
            expected = sales_by_sql(database, since, until)
        finally:
            database.dispose()
        assert outcome["result"] == expected and expected["orders"] > 10_000

        listed = batch(project, "runs", "list", "--job", "reports.sales_summary", "--limit", "10")
        assert outcome["run_id"] in listed.stdout, listed.stderr
        shown = batch(project, "runs", "show", outcome["run_id"][:8], "--json")
        assert json.loads(shown.stdout)["run_id"] == outcome["run_id"], shown.stderr
        disabled = batch(project, "schedules", "disable", "hourly-sales-summary")
        assert (disabled.returncode, disabled.stdout) == (0, "disabled hourly-sales-summary\n")
    finally:
        printed = first.interrupt()
    assert "Error" not in printed and "Traceback" not in printed, printed[-3000:]
    assert "stopped the private redis-server" in printed
    assert not is_reachable(services["REDIS_URL"])
    assert not (project / SERVICES_FILE).exists()

    second = MakeRun(project, port, tmp_path / "make-run-2.log")
    try:
        second.wait_until_serving()
        listed = batch(project, "schedules", "list")
        line = next(x for x in listed.stdout.splitlines() if x.startswith("hourly-sales-summary"))
        assert line.split()[-1] == "disabled", listed.stdout
        # A backlog (12 runs over all 30 days of orders), then Ctrl-C in the middle of it.
        backlog = submit_backlog(project, port, hour - timedelta(days=31), hour, runs=12)
        assert going(project, backlog) > 0, "the backlog ended before the Ctrl-C"
    finally:
        printed = second.interrupt()
    assert "make: ***" not in printed, printed[-3000:]
    assert (
        "schedules from schedules/: 0 created, 2 already in the database and left as they are;"
        " 1 differ from their file (hourly-sales-summary)"
    ) in printed

    # make run again: every run of the backlog ends, exact, with nobody acting on it.
    third = MakeRun(project, port, tmp_path / "make-run-3.log")
    try:
        third.wait_until_serving()
        wait_until(lambda: going(project, backlog) == 0, timeout=90)
        database = project_core(project)
        try:
            with database.reading() as session:
                ended = session.scalars(select(Run).where(Run.id.in_(backlog))).all()
            expected = sales_by_sql(database, hour - timedelta(days=31), hour)
        finally:
            database.dispose()
        assert [(run.status, run.result) for run in ended] == [("succeeded", expected)] * 12
    finally:
        printed = third.interrupt()
    assert "make: ***" not in printed, printed[-3000:]


def project_core(project: Path) -> Core:
    return Core(Settings(database_url=f"sqlite:///{project / 'instance' / 'batch.db'}"))


def submit_backlog(
    project: Path, port: int, since: datetime, until: datetime, *, runs: int
) -> list[str]:
    """``runs`` runs queued at once through the JSON API of the running web process."""
    token = batch(project, "tokens", "add", f"backlog-{time.time_ns()}").stdout.strip()
    body = json.dumps({"params": {"since": since.isoformat(), "until": until.isoformat()}})
    run_ids = []
    for _ in range(runs):
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/jobs/reports.sales_summary/runs",
            data=body.encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            run_ids.append(json.loads(response.read())["run_id"])
    return run_ids


def going(project: Path, run_ids: list[str]) -> int:
    """How many of the runs are still queued or running."""
    core = project_core(project)
    try:
        with core.reading() as session:
            return session.scalar(
                select(func.count())
                .select_from(Run)
                .where(Run.id.in_(run_ids), Run.status.in_(("queued", "running")))
            )
    finally:
        core.dispose()
