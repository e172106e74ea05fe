""" "Run a job" from the admin: a form drawn from the job's params schema, errors at the fields,
then the run's page and its exact result from a real worker."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from celery import Celery
from flask.testing import FlaskClient
from sqlalchemy import func, select

from batch.core import Core
from batch.models import Run
from tests.conftest import wait_for_run
from tests.test_engine import expected_sum
from tests.web.conftest import csrf_token, field_errors

SUM = "tests.sum_squares"
SALES = "reports.sales_summary"


def run_count(core: Core) -> int:
    with core.reading() as session:
        return session.scalar(select(func.count()).select_from(Run)) or 0


def post(client: FlaskClient, data: dict[str, str]) -> object:
    token = csrf_token(client, f"/runs/new?job={data.get('job', SUM)}")
    return client.post("/runs/new", data={**data, "csrf_token": token})


def test_the_form_draws_the_chosen_jobs_params(client: FlaskClient, core: Core) -> None:
    for job in (SALES, SUM):
        page = client.get(f"/runs/new?job={job}").get_data(as_text=True)
        schema = core.jobs.get(job).params_model.model_json_schema()
        assert re.findall(r'id="param-(\w+)"', page) == list(schema["properties"])
        assert f'<option value="{job}" selected>' in page
        assert f'<input type="hidden" name="job" value="{job}">' in page
    assert 'placeholder="1000"' in page and 'min="0"' in page  # n: default 1000, ge=0
    assert 'href="/runs/new"' in client.get("/runs/").get_data(as_text=True)


def test_a_valid_form_queues_the_run_and_shows_its_exact_result(
    client: FlaskClient, core: Core, celery_app: Celery, worker: Path
) -> None:
    response = post(client, {"job": SUM, "params.n": "2500"})
    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith("/runs/")
    run = wait_for_run(core, location.removeprefix("/runs/"))
    assert (run.status, run.job, run.params, run.trigger, run.trigger_kind) == (
        "succeeded",
        SUM,
        {"n": 2500, "fail_chunk": None, "fail_while_file": None},
        "user:admin",
        "user",
    )
    assert run.result == {"sum": expected_sum(2500)}
    page = client.get(location).get_data(as_text=True)
    assert f"Run {run.id[:8]} of {SUM} queued." in page


def test_a_blank_field_takes_the_jobs_default(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    response = post(client, {"job": SUM, "params.n": "  "})
    assert response.status_code == 302
    with core.reading() as session:
        assert session.scalars(select(Run.params)).all() == [
            {"n": 1000, "fail_chunk": None, "fail_while_file": None}
        ]


@pytest.mark.parametrize(
    ("data", "errors"),
    [
        ({"job": SUM, "params.n": "ten"}, {"params.n": "must be a whole number, not 'ten'"}),
        ({"job": SUM, "params.n": "-1"}, {"params.n": "must be at least 0"}),
        (
            {
                "job": SALES,
                "params.since": "2026-01-02T00:00:00Z",
                "params.until": "2026-01-01T00:00:00Z",
            },
            {"params": "since must be before until"},
        ),
        # Two bad fields: both are shown, each once, at the first answer.
        (
            {"job": SALES, "params.since": "monday", "params.until": "2026-01-01T00:00"},
            {
                "params.since": "must be a date and time with its zone, such as"
                " 2026-12-01T06:00:00+00:00, not 'monday'",
                "params.until": "must name its zone, such as 2026-12-01T06:00:00+00:00 (Z for UTC)",
            },
        ),
    ],
)
def test_bad_params_are_shown_at_their_field_and_nothing_is_written(
    client: FlaskClient,
    core: Core,
    celery_app: Celery,
    data: dict[str, str],
    errors: dict[str, str],
) -> None:
    response = post(client, data)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert field_errors(page) == errors, page
    for message in errors.values():
        assert html.unescape(page).count(message) == 1
    for key, value in data.items():  # what was typed stays in the form
        if key.startswith("params."):
            assert f'value="{value}"' in page
    assert run_count(core) == 0


def test_an_unknown_job_or_a_missing_token_writes_nothing(
    client: FlaskClient, core: Core, celery_app: Celery
) -> None:
    assert client.get("/runs/new?job=no.such.job").status_code == 400
    response = post(client, {"job": "no.such.job"})
    assert response.status_code == 400
    assert "unknown job &#39;no.such.job&#39;" in response.get_data(as_text=True)
    assert client.post("/runs/new", data={"job": SUM, "params.n": "3"}).status_code == 400
    assert run_count(core) == 0
