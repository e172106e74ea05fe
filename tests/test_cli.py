"""The batch command as a person uses it: real worker, real Redis, real database."""

from __future__ import annotations

import json

import pytest
from celery import Celery
from click.testing import CliRunner
from sqlalchemy import func, select

from batch.cli import main
from batch.core import Core
from batch.models import Order, Run
from tests.conftest import settings_env, wait_for_run
from tests.test_engine import expected_sum
from tests.test_queries import add_run
from tests.web.test_runs_pages import add_triggered_runs


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
            "error: invalid params for tests.sum_squares: n: must be a whole number, not 'ten'\n",
        ),
        (
            ["run", "tests.sum_squares", "-p", "colour=red"],
            "error: invalid params for tests.sum_squares: colour: not a known field\n",
        ),
        (["run", "tests.sum_squares", "-p", "n"], "error: bad param 'n': expected key=value\n"),
        (
            ["run", "reports.sales_summary", "-p", "since=2026-01-02T00:00:00Z",
             "-p", "until=2026-01-01T00:00:00Z"],
            "error: invalid params for reports.sales_summary: params:"
            " since must be before until\n",
        ),
        (["runs", "show", "nope"], "error: run nope not found\n"),
        (["runs", "list", "--job", "nope"], "error: unknown job 'nope'\n"),
        (["runs", "list", "--status", "done"], "error: unknown status 'done': expected one of"
         " queued, running, succeeded, failed, skipped, cancelled, waiting\n"),
        (["runs", "list", "--since", "monday"], "error: bad since 'monday': expected a date"
         " (2026-12-01) or a date and time (2026-12-01T06:00)\n"),
        (["runs", "list", "--schedule", "a b"], "error: bad schedule 'a b': not a schedule name\n"),
        (["runs", "list", "--limit", "10001"], "error: bad limit 10001: expected 1 to 10000\n"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    core: Core, celery_app: Celery, args: list[str], message: str
) -> None:
    code, out, err = cli(core, *args)
    assert (code, err, out) == (2, message, "")
    # submit_run sends its message only after recording the run: no row, no message.
    assert run_count(core) == 0


def test_runs_list_filters_as_the_admin_and_pages_past_one_query(core: Core) -> None:
    add_triggered_runs(core)
    for minute in range(5, 455):  # 450 more runs of the schedule: three pages of 200
        add_run(
            core, f"h{minute:03d}", minute=minute, schedule_name="hourly", trigger="schedule:hourly"
        )

    def ids(*args: str) -> list[str]:
        code, out, err = cli(core, "runs", "list", *args)
        assert (code, err) == (0, "")
        return [line.split()[0] for line in out.splitlines()]

    assert ids("--schedule", "hourly", "--status", "failed") == ["t3"]
    assert ids("--trigger", "user") == ["t1"]
    assert ids("--since", "2026-03-01T12:01", "--until", "2026-03-01T12:03") == ["t2", "t1"]
    newest = ids("--schedule", "hourly", "--limit", "10000")
    assert newest == [f"h{m:03d}" for m in range(454, 4, -1)] + ["t3", "t0"]
    assert ids("--schedule", "hourly", "--limit", "3") == ["h454", "h453", "h452"]
    code, out, _ = cli(core, "runs", "list", "--id", "t1", "--json")
    assert code == 2  # ids are hexadecimal: "t1" cannot start one
    code, out, _ = cli(core, "runs", "list", "--trigger", "api", "--json")
    assert (code, [run["run_id"] for run in json.loads(out)]) == (0, ["t2"])
    assert json.loads(out)[0]["trigger"] == "api:etl"


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


def test_a_failed_run_prints_its_error_in_json(core: Core, worker) -> None:
    code, out, _ = cli(core, "run", "tests.sum_squares", "-p", "fail_chunk=3", "--wait", "--json")
    document = json.loads(out)
    assert code == 1
    assert (document["status"], document["result"]) == ("failed", None)
    assert "chunk with item 0 failed on purpose" in document["error"]
    code, out, _ = cli(core, "run", "tests.sum_squares", "--json")
    assert json.loads(out)["error"] is None
    wait_for_run(core, json.loads(out)["run_id"])


def add_runs(core: Core, *ids: str) -> None:
    with core.transaction() as session:
        for run_id in ids:
            session.add(
                Run(id=run_id, job="tests.sum_squares", params={}, status="succeeded",
                    trigger="test", queue="default")
            )  # fmt: skip


def test_runs_show_takes_the_short_id_the_admin_shows(core: Core) -> None:
    first = "abcd1111-0000-4000-8000-000000000001"
    second = "abcd2222-0000-4000-8000-000000000002"
    add_runs(core, first, second, "abcd9999-0000-4000-8000-000000000003")
    code, out, _ = cli(core, "runs", "show", "ABCD1111", "--json")
    assert (code, json.loads(out)["run_id"]) == (0, first)
    code, out, _ = cli(core, "runs", "show", "abcd2222-", "--json")
    assert (code, json.loads(out)["run_id"]) == (0, second)
    code, out, err = cli(core, "runs", "show", "abcd")
    assert (code, out, err) == (
        2, "", "error: run id 'abcd' matches several runs: give more of the id\n"
    )  # fmt: skip
    for missing in ("abc", "abcd3", "zzzz1111", "abcd%"):
        code, _, err = cli(core, "runs", "show", missing)
        assert (code, err) == (2, f"error: run {missing} not found\n")


def test_demo_seed_adds_or_replaces(core: Core) -> None:
    code, out, err = cli(core, "demo", "seed", "--orders", "300")
    assert (code, out) == (0, "added 300 demo orders: 300 orders in the table\n"), err
    code, out, _ = cli(core, "demo", "seed", "--orders", "200")
    assert out == "added 200 demo orders: 500 orders in the table\n"
    code, out, _ = cli(core, "demo", "seed", "--orders", "100", "--replace")
    assert out == "replaced every order with 100 demo orders: 100 orders in the table\n"
    with core.reading() as session:
        assert session.scalar(select(func.count()).select_from(Order)) == 100
