"""Cancelling a run from the admin, the API and the CLI: the run ends, its pending chunks too."""

from __future__ import annotations

from click.testing import CliRunner
from flask.testing import FlaskClient
from sqlalchemy import select

from batch.cli import main
from batch.core import Core
from batch.models import Run, RunChunk
from tests.conftest import settings_env
from tests.test_queries import add_chunks, add_run
from tests.web.conftest import csrf_token

GOING = "c0ffee00-0000-4000-8000-000000000001"


def going_run(core: Core, status: str = "running") -> None:
    add_run(core, GOING, status=status, chunk_count=3, finished_at=None)
    add_chunks(core, GOING, ["succeeded", "running", "pending"])


def states(core: Core) -> tuple[str, str | None, list[str]]:
    with core.reading() as session:
        run = session.get(Run, GOING)
        chunks = session.scalars(
            select(RunChunk.status).where(RunChunk.run_id == GOING).order_by(RunChunk.chunk_index)
        ).all()
    return run.status, run.error, list(chunks)


def test_the_admin_cancels_a_running_run(client: FlaskClient, core: Core) -> None:
    going_run(core)
    page = client.get(f"/runs/{GOING}").get_data(as_text=True)
    assert "Cancel this run" in page
    token = csrf_token(client, f"/runs/{GOING}")
    response = client.post(f"/runs/{GOING}/cancel", data={"csrf_token": token})
    assert (response.status_code, response.location) == (302, f"/runs/{GOING}")
    assert states(core) == (
        "cancelled",
        "cancelled by user:admin",
        ["succeeded", "running", "cancelled"],
    )
    page = client.get(f"/runs/{GOING}").get_data(as_text=True)
    assert "Cancel this run" not in page and "Retry this run" in page
    again = client.post(f"/runs/{GOING}/cancel", data={"csrf_token": token})
    assert again.status_code == 409
    assert "only a queued, waiting or running run can be cancelled" in again.get_data(as_text=True)
    listed = client.get("/runs/?status=cancelled").get_data(as_text=True)
    assert f'data-run-id="{GOING}"' in listed


def test_cancel_needs_the_csrf_token(client: FlaskClient, core: Core) -> None:
    going_run(core)
    assert client.post(f"/runs/{GOING}/cancel").status_code == 400
    assert states(core)[0] == "running"


def test_the_api_cancels_a_queued_run(api: FlaskClient, core: Core) -> None:
    going_run(core, status="queued")
    response = api.post(f"/api/runs/{GOING[:8]}/cancel")
    assert response.status_code == 200
    assert (response.json["run_id"], response.json["status"]) == (GOING, "cancelled")
    assert response.json["error"] == "cancelled by api:tests"
    again = api.post(f"/api/runs/{GOING}/cancel")
    assert (again.status_code, again.json) == (
        409,
        {"error": f"run {GOING} is cancelled: only a queued, waiting or running run can be"
                  " cancelled"},
    )  # fmt: skip
    assert api.post("/api/runs/nope/cancel").status_code == 404


def test_the_cli_cancels_a_running_run(core: Core) -> None:
    going_run(core)
    runner = CliRunner()
    result = runner.invoke(main, ["runs", "cancel", GOING[:8]], env=settings_env(core.settings))
    assert (result.exit_code, result.stdout) == (0, f"cancelled {GOING}\n")
    assert states(core)[0] == "cancelled"
    result = runner.invoke(main, ["runs", "cancel", GOING], env=settings_env(core.settings))
    assert (result.exit_code, result.stderr) == (
        2,
        f"error: run {GOING} is cancelled: only a queued, waiting or running run can be"
        " cancelled\n",
    )  # fmt: skip
