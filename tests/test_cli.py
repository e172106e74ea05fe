"""The batch command as a person uses it: real worker, real Redis, real database."""

from __future__ import annotations

import json

import pytest
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import func, select

from batch.cli import main
from batch.core import Core
from batch.models import Run
from tests.conftest import settings_env, wait_for_run
from tests.test_engine import expected_sum


def cli(core: Core, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), env=settings_env(core.settings))
    return result.exit_code, result.stdout, result.stderr


def run_count(core: Core) -> int:
    with core.transaction() as session:
        return session.scalar(select(func.count()).select_from(Run))


def test_run_wait_json_prints_one_object_and_progress(core: Core, worker) -> None:
    code, out, err = cli(core, "run", "tests.sum_squares", "-p", "n=4000", "--wait", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert document["status"] == "succeeded"
    assert document["result"] == {"sum": expected_sum(4000)}
    assert "8/8 chunks" in err
    code, out, _ = cli(core, "runs", "show", document["run_id"], "--json")
    shown = json.loads(out)
    assert (shown["chunks_done"], shown["chunks_total"], shown["trigger"]) == (8, 8, "cli")
    code, out, _ = cli(core, "runs", "list", "--job", "tests.sum_squares")
    assert document["run_id"] in out and "succeeded" in out


def test_run_without_wait_prints_the_id(core: Core, worker) -> None:
    code, out, _ = cli(core, "run", "tests.sum_squares")
    assert code == 0
    assert wait_for_run(core, out.strip()).result == {"sum": expected_sum(1000)}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "reports.nope"], "error: unknown job 'reports.nope'\n"),
        (
            ["run", "tests.sum_squares", "-p", "n=ten"],
            "error: invalid params for tests.sum_squares: n: Input should be a valid integer,"
            " unable to parse string as an integer\n",
        ),
        (
            ["run", "tests.sum_squares", "-p", "colour=red"],
            "error: invalid params for tests.sum_squares: colour: Extra inputs are not permitted\n",
        ),
        (["run", "tests.sum_squares", "-p", "n"], "error: bad param 'n': expected key=value\n"),
        (
            ["run", "reports.sales_summary", "-p", "since=2026-01-02T00:00:00Z",
             "-p", "until=2026-01-01T00:00:00Z"],
            "error: invalid params for reports.sales_summary: params: Value error,"
            " since must be before until\n",
        ),
        (["runs", "show", "nope"], "error: run nope not found\n"),
        (["runs", "list", "--job", "nope"], "error: unknown job 'nope'\n"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    core: Core, celery_app: Celery, args: list[str], message: str
) -> None:
    code, out, err = cli(core, *args)
    assert (code, err, out) == (2, message, "")
    # submit_run sends its message only after recording the run: no row, no message.
    assert run_count(core) == 0


def test_jobs_lists_every_registered_job(core: Core) -> None:
    code, out, _ = cli(core, "jobs")
    assert code == 0
    names = [line.split()[0] for line in out.splitlines() if not line.startswith(" ")]
    assert names == [
        "cleanups.purge_runs",
        "reports.sales_summary",
        "tests.sum_squares",
        "tests.sum_squares_reports",
    ]
