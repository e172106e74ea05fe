"""Backfill from the admin and the API: preview, start, follow and cancel; bad input refused
with nothing written."""

from __future__ import annotations

import re
import time
from datetime import timedelta

import pytest
from celery import Celery
from flask.testing import FlaskClient
from sqlalchemy import func, select, update

from batch import backfills, demo, schedules
from batch.core import Core
from batch.lab import wait_until
from batch.models import Backfill, Run, Schedule
from tests.test_backfills import END, HOUR, add_schedule, assert_exact, schedule_runs, wait_done
from tests.test_catch_up import MINUTE, add, minute_ago, runs_of
from tests.test_cli import cli
from tests.web.conftest import csrf_token, stored_state

SPAN = {"from": "2026-11-19T18:00", "to": "2026-11-20"}


def count(core: Core, model: type) -> int:
    with core.reading() as session:
        return session.scalar(select(func.count()).select_from(model))


# --- The API --------------------------------------------------------------------------------


def test_api_dry_run_then_backfill_then_poll_until_done(
    core: Core, celery_app: Celery, worker, api: FlaskClient
) -> None:
    demo.seed_orders(core.engine, 10_000, end=END)
    add_schedule(core, celery_app)
    path = "/api/schedules/hourly-sales/backfill"

    dry = api.post(path, json={**SPAN, "dry_run": True})
    assert dry.status_code == 200, dry.json
    assert (dry.json["fires"], dry.json["new"], dry.json["runs"]) == (6, 6, 6)
    first = dry.json["first_runs"][0]
    assert first == {"fire": "2026-11-19T18:00:00+00:00", "action": "new", "replaces": None,
                     "params": {"since": "2026-11-19T17:00:00Z",
                                "until": "2026-11-19T18:00:00Z"}}  # fmt: skip
    assert count(core, Run) == count(core, Backfill) == 0

    started = api.post(path, json={**SPAN, "only": "missing", "max_running": 2})
    assert started.status_code == 202, started.json
    url = started.headers["Location"]
    assert url == f"/api/backfills/{started.json['id']}"
    assert started.json["state"] == "running" and started.json["max_running"] == 2
    deadline = time.monotonic() + 60
    while (polled := api.get(url).json)["state"] == "running":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert (polled["state"], polled["runs"], polled["runs_made"]) == ("done", {"succeeded": 6}, 6)
    for run in schedule_runs(core):
        assert_exact(core, run)
    assert api.post(f"{url}/cancel").status_code == 409


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"to": "2026-11-20"}, 400, "from is required"),
        ({**SPAN, "from": 5}, 400, "from is required"),
        ({**SPAN, "from": "soon"}, 400, "bad from 'soon'"),
        ({**SPAN, "to": "2999-01-01"}, 400, "is in the future"),
        ({**SPAN, "only": "some"}, 400, "bad only 'some'"),
        ({**SPAN, "only": ["all"]}, 400, "bad only"),
        ({**SPAN, "max_running": "many"}, 400, "bad max running 'many'"),
        ({**SPAN, "max_running": 1000}, 400, "bad max running 1000"),
        ({**SPAN, "max_running": True}, 400, "bad max running True"),
        ({**SPAN, "max_running": 0}, 400, "bad max running 0"),
        ({**SPAN, "only": 0}, 400, "bad only 0"),
        ({**SPAN, "dry_run": "yes"}, 400, "dry_run must be true or false"),
        ({**SPAN, "speed": 3}, 400, "unknown field(s) in the request body: speed"),
    ],
)
def test_api_refuses_a_bad_backfill_and_writes_nothing(
    core: Core, celery_app: Celery, api: FlaskClient, body: dict, status: int, message: str
) -> None:
    add_schedule(core, celery_app)
    before = stored_state(core)
    response = api.post("/api/schedules/hourly-sales/backfill", json=body)
    assert response.status_code == status and message in response.json["error"], response.json
    assert stored_state(core) == before


def test_api_unknown_schedule_and_backfill_are_404(api: FlaskClient, core: Core) -> None:
    response = api.post("/api/schedules/nope/backfill", json=SPAN)
    assert response.status_code == 404 and "schedule 'nope' not found" in response.json["error"]
    assert api.get("/api/backfills/999").status_code == 404
    assert api.post("/api/backfills/999/cancel").json == {"error": "no backfill 999"}


# --- The admin ------------------------------------------------------------------------------


def form_post(client: FlaskClient, path: str, data: dict[str, str]) -> tuple[int, str]:
    token = csrf_token(client, "/schedules/hourly-sales/backfill")
    response = client.post(path, data={**data, "csrf_token": token}, follow_redirects=True)
    return response.status_code, response.get_data(as_text=True)


def test_the_page_previews_then_starts_and_lists_the_backfill(
    core: Core, celery_app: Celery, worker, client: FlaskClient
) -> None:
    demo.seed_orders(core.engine, 10_000, end=END)
    add_schedule(core, celery_app)
    page = client.get("/schedules/hourly-sales").get_data(as_text=True)
    assert 'href="/schedules/hourly-sales/backfill"' in page
    path = "/schedules/hourly-sales/backfill"

    status, page = form_post(client, path, {**SPAN, "only": "missing", "action": "preview"})
    assert status == 200
    summary = re.search(r'<p id="plan-summary">(.*?)</p>', page, re.S)
    assert summary and " ".join(summary.group(1).split()) == (
        "6 fires: would run 6 (6 new, 0 again); 0 left as they are. Nothing was written."
    )
    assert count(core, Run) == count(core, Backfill) == 0

    status, page = form_post(client, path, {**SPAN, "max_running": "3", "action": "start"})
    assert status == 200 and "Backfill " in page and "started: 6 fires." in page
    with core.reading() as session:
        backfill_id = session.scalar(select(Backfill.id))
    assert wait_done(core, backfill_id, most_going=3).runs_made == 6
    page = client.get(path).get_data(as_text=True)
    row = re.search(rf'<tr data-backfill-id="{backfill_id}">(.*?)</tr>', page, re.S)
    assert row and "6 succeeded" in row.group(1) and "done" in row.group(1)


def test_the_page_shows_a_bad_backfill_above_the_form_and_writes_nothing(
    core: Core, celery_app: Celery, client: FlaskClient
) -> None:
    add_schedule(core, celery_app)
    before = stored_state(core)
    status, page = form_post(
        client, "/schedules/hourly-sales/backfill",
        {"from": "2026-11-20", "to": "2026-11-19", "action": "start"},
    )  # fmt: skip
    assert status == 400
    assert re.search(r'id="form-error"[^>]*>the range is empty', page)
    assert 'value="2026-11-20"' in page  # what was typed stays in the form
    assert stored_state(core) == before
    assert client.get("/schedules/nope/backfill").status_code == 404


def test_cancel_from_the_page_stops_the_backfill(
    core: Core, celery_app: Celery, client: FlaskClient
) -> None:
    add_schedule(core, celery_app)
    # A backfill with its one run going (a row no message names): the driver leaves it be.
    with core.transaction() as session:
        backfill = Backfill(
            schedule_name="hourly-sales",
            since=END - HOUR,
            until=END,
            only="missing",
            max_running=1,
            state="running",
            actor="test",
            fires=1,
            fires_done=0,
            runs_made=0,
            next_fire=END - HOUR,
        )
        session.add(backfill)
        session.flush()
        backfill_id = backfill.id
        session.add(
            Run(
                id="going",
                job="reports.sales_summary",
                params={},
                queue="reports",
                trigger="test",
                backfill_id=backfill_id,
            )
        )
    # fmt: skip
    status, page = form_post(client, f"/backfills/{backfill_id}/cancel", {})
    assert status == 200 and f"Backfill {backfill_id} cancelled" in page
    assert backfills.get_backfill(core, backfill_id).state == "cancelled"
    status, page = form_post(client, f"/backfills/{backfill_id}/cancel", {})
    assert f"backfill {backfill_id} is cancelled" in page


# --- Resume with catch-up ------------------------------------------------------------------


def test_enable_and_catch_up_from_the_page_and_the_cli(
    core: Core, celery_app: Celery, worker, client: FlaskClient
) -> None:
    now = minute_ago(0)
    for name in ("from-page", "from-cli"):
        add(core, celery_app, name)
        schedules.set_enabled(core, celery_app, name, False, actor="test")
        with core.transaction() as session:
            session.execute(
                update(Schedule)
                .where(Schedule.name == name)
                .values(disabled_at=now - 2 * MINUTE - timedelta(seconds=30))
            )
    token = csrf_token(client, "/schedules/from-page")
    response = client.post("/schedules/from-page/resume", data={"csrf_token": token})
    assert response.status_code == 302
    assert response.headers["Location"] == "/schedules/from-page/backfill"

    code, out, err = cli(core, "schedules", "enable", "--catch-up", "from-cli")
    assert code == 0, err
    assert out.startswith("enabled from-cli: backfill ") and "runs what it missed" in out
    code, _, err = cli(core, "schedules", "enable", "--catch-up", "--job", "tests.sum_squares")
    assert code == 2 and "--catch-up takes schedule NAMES, not filters" in err

    for name in ("from-page", "from-cli"):
        wait_until(lambda name=name: _done(core, name), timeout=60)
        fires = [run.scheduled_for for run in runs_of(core, name)]
        assert fires[:2] == [now - 2 * MINUTE, now - MINUTE]
        assert len(fires) == len(set(fires))


def _done(core: Core, name: str) -> bool:
    with core.reading() as session:
        states = session.scalars(select(Backfill.state).where(Backfill.schedule_name == name))
        return list(states) == ["done"]
