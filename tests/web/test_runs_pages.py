"""The runs pages: list filters and paging, the run page, live progress and retry."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from celery import Celery
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from batch import runs
from batch.core import Core
from batch.models import Run
from tests.conftest import wait_for_run
from tests.test_engine import expected_sum
from tests.test_queries import SALES, SUMS, T0, add_chunks, add_run
from tests.test_retries import failed_run
from tests.web.conftest import csrf_token, field_errors

ROW_RE = re.compile(r'<tr data-run-id="([^"]+)"')
NEXT_RE = re.compile(r'<a rel="next" href="([^"]+)"')


def listed(client: FlaskClient, url: str) -> list[str]:
    """The run ids of the rows on a runs list page."""
    response = client.get(url)
    assert response.status_code == 200, response.get_data(as_text=True)
    return ROW_RE.findall(response.get_data(as_text=True))


@pytest.fixture
def mixed(core: Core) -> Core:
    """Six runs of two jobs in four states, r0 oldest."""
    for minute, (job, status) in enumerate(
        [
            (SUMS, "succeeded"),
            (SALES, "failed"),
            (SUMS, "failed"),
            (SALES, "running"),
            (SUMS, "queued"),
            (SALES, "succeeded"),
        ]
    ):
        add_run(core, f"r{minute}", job=job, status=status, minute=minute)
    return core


@pytest.mark.parametrize(
    "request_line",
    [
        ("GET", "/runs/"),
        ("GET", "/runs/r1"),
        ("GET", "/runs/progress.json?ids=r1"),
        ("GET", "/results/"),
        ("GET", f"/results/{SALES}"),
        ("GET", "/"),
        ("POST", "/runs/r1/retry"),
        ("GET", "/runs/new"),
        ("POST", "/runs/new"),
    ],
)
def test_every_route_requires_sign_in(app: Flask, mixed: Core, request_line) -> None:
    method, path = request_line
    response = app.test_client().open(path, method=method)
    # A page redirects to the sign-in form; a POST without a session has no CSRF token.
    assert response.status_code in (302, 400)
    if response.status_code == 302:
        assert response.headers["Location"].startswith("/login?next=")
    with mixed.reading() as session:
        assert session.scalar(select(Run.id).where(Run.id.not_like("r%"))) is None


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", ["r5", "r4", "r3", "r2", "r1", "r0"]),
        (f"?job={SALES}", ["r5", "r3", "r1"]),
        ("?status=failed", ["r2", "r1"]),
        (f"?job={SUMS}&status=failed", ["r2"]),
        (f"?job={SALES}&status=queued", []),
        ("?job=&status=", ["r5", "r4", "r3", "r2", "r1", "r0"]),
    ],
)
def test_runs_list_filters(client: FlaskClient, mixed: Core, query: str, expected) -> None:
    assert listed(client, f"/runs/{query}") == expected


def test_runs_list_shows_progress_of_going_runs(client: FlaskClient, core: Core) -> None:
    add_run(core, "going", status="running", chunk_count=4)
    add_chunks(core, "going", ["succeeded", "succeeded", "running"])
    add_run(core, "done", status="succeeded", chunk_count=2, minute=-1)
    page = client.get("/runs/").get_data(as_text=True)
    assert '<tr data-run-id="going" data-status="running">' in page
    assert 'style="width: 50.0%"' in page and ">2/4</span>" in page
    assert page.count('data-role="bar"') == 1  # finished runs have no bar
    assert "runs.js" in page and 'data-progress-url="/runs/progress.json"' in page


def test_runs_list_pages_older_without_gap_or_overlap(client: FlaskClient, core: Core) -> None:
    for index in range(7):
        add_run(core, f"k{index}", minute=min(index, 3))  # k3..k6 share a timestamp
    seen: list[str] = []
    url: str | None = "/runs/?limit=3"
    pages = 0
    while url:
        page = client.get(url).get_data(as_text=True)
        seen += ROW_RE.findall(page)
        found = NEXT_RE.search(page)
        url = found.group(1).replace("&amp;", "&") if found else None
        pages += 1
    assert seen == ["k6", "k5", "k4", "k3", "k2", "k1", "k0"] and pages == 3
    older = client.get("/runs/?limit=3").get_data(as_text=True)
    assert "Newest" not in older and "Newest" in client.get(
        NEXT_RE.search(older).group(1).replace("&amp;", "&")
    ).get_data(as_text=True)


def test_runs_list_pages_keep_the_filters(client: FlaskClient, mixed: Core) -> None:
    first = client.get(f"/runs/?job={SALES}&limit=2").get_data(as_text=True)
    next_url = NEXT_RE.search(first).group(1).replace("&amp;", "&")
    assert f"job={SALES}" in next_url and "limit=2" in next_url
    assert ROW_RE.findall(first) + listed(client, next_url) == ["r5", "r3", "r1"]


def add_triggered_runs(core: Core) -> None:
    """Runs t0 (oldest) .. t4 started each way, t0 and t3 by the schedule ``hourly``."""
    for minute, trigger in enumerate(
        ["schedule:hourly", "user:ann", "api:etl", "schedule:hourly", "cli"]
    ):
        schedule = "hourly" if trigger.startswith("schedule:") else None
        status = "failed" if minute in (1, 3) else "succeeded"
        add_run(
            core,
            f"t{minute}",
            minute=minute,
            status=status,
            trigger=trigger,
            schedule_name=schedule,
        )


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("?schedule=hourly", ["t3", "t0"]),
        ("?schedule=hourly&status=failed", ["t3"]),
        ("?trigger=user", ["t1"]),
        ("?trigger=schedule&since=2026-03-01T12:01", ["t3"]),
        ("?since=2026-03-01T12:01&until=2026-03-01T12:03", ["t2", "t1"]),
        ("?until=2026-03-01", ["t4", "t3", "t2", "t1", "t0"]),
        ("?q=t", None),
        ("?schedule=nobody", []),
    ],
)
def test_runs_list_filters_by_schedule_trigger_and_time(
    client: FlaskClient, core: Core, query: str, expected: list[str] | None
) -> None:
    add_triggered_runs(core)
    if expected is None:
        assert client.get(f"/runs/{query}").status_code == 400
    else:
        assert listed(client, f"/runs/{query}") == expected


def test_runs_list_finds_a_run_by_the_short_id_it_shows(client: FlaskClient, core: Core) -> None:
    add_run(core, "3f2a9c1e-aaaa-4bbb-8ccc-000000000001", minute=1)
    add_run(core, "3f2a9c1f-aaaa-4bbb-8ccc-000000000002", minute=2)
    assert listed(client, "/runs/?q=3F2A9C1E") == ["3f2a9c1e-aaaa-4bbb-8ccc-000000000001"]
    assert listed(client, "/runs/?q=3f2a") == [
        "3f2a9c1f-aaaa-4bbb-8ccc-000000000002",
        "3f2a9c1e-aaaa-4bbb-8ccc-000000000001",
    ]


def test_every_filter_is_kept_in_the_form_and_the_older_link(
    client: FlaskClient, core: Core
) -> None:
    add_triggered_runs(core)
    query = "?schedule=hourly&trigger=schedule&since=2026-03-01&until=2026-03-02&limit=1"
    page = client.get(f"/runs/{query}").get_data(as_text=True)
    next_url = NEXT_RE.search(page).group(1).replace("&amp;", "&")
    for kept in ("schedule=hourly", "trigger=schedule", "since=2026-03-01", "until=2026-03-02",
                 "limit=1"):  # fmt: skip
        assert kept in next_url
    assert 'name="schedule" value="hourly"' in page
    assert '<option value="schedule" selected>' in page
    assert 'name="since" value="2026-03-01"' in page and 'name="until" value="2026-03-02"' in page
    assert ROW_RE.findall(page) + listed(client, next_url) == ["t3", "t0"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("?status=done", "unknown status &#39;done&#39;"),
        ("?trigger=robot", "unknown trigger &#39;robot&#39;"),
        ("?since=yesterday", "bad since &#39;yesterday&#39;"),
        ("?until=2026-13-01", "bad until &#39;2026-13-01&#39;"),
        ("?since=2026-03-02&until=2026-03-01", "since must be earlier than until"),
        ("?schedule=a%20b", "bad schedule &#39;a b&#39;"),
        ("?q=xyz1", "bad run id &#39;xyz1&#39;"),
        ("?job=no.such.job", "unknown job &#39;no.such.job&#39;"),
        ("?before=yesterday", "bad cursor &#39;yesterday&#39;"),
        ("?limit=0", "bad limit 0"),
        ("?limit=many", "bad limit &#39;many&#39;"),
    ],
)
def test_bad_filters_are_400_with_a_message(client: FlaskClient, query: str, message: str) -> None:
    response = client.get(f"/runs/{query}")
    assert response.status_code == 400
    assert message in response.get_data(as_text=True)


def test_every_bad_filter_is_shown_at_its_field_at_once_and_nothing_is_searched(
    client: FlaskClient, core: Core
) -> None:
    add_run(core, "0fe1c2d3-0000-4000-8000-000000000001")
    response = client.get("/runs/?q=xyz1&schedule=a%20b&since=yesterday&until=2026-13-01&job=")
    page = response.get_data(as_text=True)
    assert response.status_code == 400
    assert field_errors(page) == {
        "q": "bad run id 'xyz1': expected at least 4 of its first characters (0-9, a-f and -)",
        "schedule": "bad schedule 'a b': not a schedule name",
        "since": "bad since 'yesterday': expected a date (2026-12-01) or a date and time"
        " (2026-12-01T06:00)",
        "until": "bad until '2026-13-01': expected a date (2026-12-01) or a date and time"
        " (2026-12-01T06:00)",
    }
    # What was typed is kept, marked for assistive technology, and no run is listed.
    assert 'name="since" value="yesterday"' in page and 'name="q" value="xyz1"' in page
    assert 'aria-invalid="true" aria-describedby="filter-until-error"' in page
    assert ROW_RE.findall(page) == [] and 'id="filter-errors"' in page
    # Two dates in the wrong order: the error is at "until".
    wrong_order = client.get("/runs/?since=2026-03-02&until=2026-03-01").get_data(as_text=True)
    assert field_errors(wrong_order) == {"until": "since must be earlier than until"}


def test_the_short_id_the_admin_shows_opens_the_run(client: FlaskClient, core: Core) -> None:
    full = "0fe1c2d3-0000-4000-8000-000000000001"
    add_run(core, full)
    add_run(core, "0fe1aaaa-0000-4000-8000-000000000002")
    response = client.get(f"/runs/{full[:8]}")
    assert (response.status_code, response.location) == (302, f"/runs/{full}")
    assert full in client.get(response.location).get_data(as_text=True)
    ambiguous = client.get("/runs/0fe1")
    assert ambiguous.status_code == 404
    assert "matches several runs" in ambiguous.get_data(as_text=True)


def test_unknown_run_is_a_404_page(client: FlaskClient, core: Core) -> None:
    response = client.get("/runs/no-such-run")
    assert response.status_code == 404
    assert "run no-such-run not found" in response.get_data(as_text=True)


def test_progress_json_counts_stored_chunks(client: FlaskClient, core: Core) -> None:
    add_run(core, "a", status="running", chunk_count=3)
    add_chunks(core, "a", ["succeeded", "failed", "running"])
    add_run(core, "b", status="queued")
    add_run(core, "c", status="succeeded", chunk_count=1)
    add_chunks(core, "c", ["succeeded"])
    response = client.get("/runs/progress.json?ids=a,b,c,unknown")
    assert response.status_code == 200
    assert response.json == {
        "runs": {
            "a": {"status": "running", "done": 1, "total": 3},
            "b": {"status": "queued", "done": 0, "total": None},
            "c": {"status": "succeeded", "done": 1, "total": 1},
        }
    }
    assert client.get("/runs/progress.json").json == {"runs": {}}
    too_many = client.get("/runs/progress.json?ids=" + ",".join(str(i) for i in range(201)))
    assert too_many.status_code == 400 and "too many run ids" in too_many.json["error"]
    assert client.get("/runs/progress.json?ids=" + "x" * 37).status_code == 400


def test_run_page_shows_a_scheduled_run(client: FlaskClient, core: Core) -> None:
    fire = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    add_run(
        core,
        "s1",
        job=SALES,
        status="succeeded",
        trigger="schedule:hourly-sales",
        schedule_name="hourly-sales",
        scheduled_for=fire,
        chunk_count=0,
        params={"since": "2026-03-01T10:00:00Z", "until": "2026-03-01T11:00:00Z"},
        result={"regions": {}, "orders": 0},
    )
    page = client.get("/runs/s1").get_data(as_text=True)
    assert re.search(
        r'schedule\s+<a href="/schedules/hourly-sales"><strong>hourly-sales</strong>', page
    )
    assert "2026-03-01 11:00:00 UTC" in page
    assert "&#34;since&#34;: &#34;2026-03-01T10:00:00Z&#34;" in page
    assert "Retry this run" not in page
    assert "this run had nothing to process" in page


def test_failed_run_page_shows_chunks_then_retry_makes_a_new_run(
    client: FlaskClient, core: Core, celery_app: Celery, worker: Path
) -> None:
    params = {"n": 800, "fail_chunk": 500}
    run_id = runs.submit_run(core, celery_app, SUMS, params, trigger="user:admin")
    failed = wait_for_run(core, run_id)
    assert failed.status == "failed"

    page = client.get(f"/runs/{run_id}").get_data(as_text=True)
    chunk_rows = re.findall(
        r'<tr data-chunk="(\d+)">.*?class="status (\w+)".*?<td class="num">(\d+)</td>'
        r'.*?<td>(?:<code class="chunk-error">([^<]*)</code>)?</td>',
        page,
        re.S,
    )
    assert len(chunk_rows) == failed.chunk_count == 8
    by_index = {
        int(index): (status, int(attempts), error) for index, status, attempts, error in chunk_rows
    }
    assert by_index[5] == (
        "failed",
        1,
        "ValueError: chunk with item 500 failed on purpose",
    )
    assert "chunk 5: ValueError: chunk with item 500 failed on purpose" in page  # the run error
    assert "user <strong>admin</strong>" in page
    assert "Retry this run" in page and 'name="csrf_token"' in page

    # Without the CSRF token nothing is submitted.
    assert client.post(f"/runs/{run_id}/retry").status_code == 400
    with core.reading() as session:
        assert session.scalar(select(Run.id).where(Run.id != run_id)) is None

    token = csrf_token(client, f"/runs/{run_id}")
    response = client.post(f"/runs/{run_id}/retry", data={"csrf_token": token})
    assert response.status_code == 302
    new_id = response.headers["Location"].removeprefix("/runs/")
    assert new_id != run_id
    retried = wait_for_run(core, new_id)
    assert (retried.job, retried.trigger) == (SUMS, f"user:admin (retry of {run_id})")
    assert retried.params == failed.params == {**params, "fail_while_file": None}
    new_page = client.get(f"/runs/{new_id}").get_data(as_text=True)
    assert f'(retry of <a class="mono" href="/runs/{run_id}">' in new_page


def test_retry_failed_chunks_from_the_run_page_runs_only_them_in_place(
    client: FlaskClient, core: Core, celery_app: Celery, worker: Path, tmp_path: Path
) -> None:
    outage = tmp_path / "outage"
    run_id = failed_run(core, celery_app, outage)
    page = client.get(f"/runs/{run_id}").get_data(as_text=True)
    assert "Retry failed chunks" in page
    assert "runs chunk 5 again in this run; the 7 stored partials are kept" in page

    assert client.post(f"/runs/{run_id}/retry-chunks").status_code == 400  # no CSRF token
    with core.reading() as session:
        assert session.get(Run, run_id).status == "failed"

    outage.unlink()
    token = csrf_token(client, f"/runs/{run_id}")
    response = client.post(f"/runs/{run_id[:8]}/retry-chunks", data={"csrf_token": token})
    assert (response.status_code, response.headers["Location"]) == (302, f"/runs/{run_id[:8]}")
    run = wait_for_run(core, run_id)
    assert (run.status, run.result) == ("succeeded", {"sum": expected_sum(800)})
    page = client.get(f"/runs/{run_id}").get_data(as_text=True)
    assert "Chunk 5 running again." in page
    history = re.search(r'<ul class="history" id="run-history">(.*?)</ul>', page, re.S)
    assert history is not None
    assert "<strong>user:admin</strong> retry chunks 5" in history.group(1)
    assert "Retry failed chunks" not in page  # it succeeded

    again = client.post(f"/runs/{run_id}/retry-chunks", data={"csrf_token": token})
    assert again.status_code == 409
    assert "is succeeded: only the chunks of a failed or cancelled run" in again.get_data(
        as_text=True
    )


def test_retry_needs_a_failed_run(client: FlaskClient, mixed: Core) -> None:
    token = csrf_token(client, "/runs/")
    response = client.post("/runs/r5/retry", data={"csrf_token": token})
    assert response.status_code == 409
    assert (
        "run r5 is succeeded: only a failed or cancelled run can be retried"
        in response.get_data(as_text=True)
    )
    missing = client.post("/runs/nope/retry", data={"csrf_token": token})
    assert missing.status_code == 404
    with mixed.reading() as session:
        assert session.scalar(select(Run.id).where(Run.id.not_like("r%"))) is None


def test_runs_script_is_served(client: FlaskClient) -> None:
    response = client.get("/static/runs.js")
    assert response.status_code == 200 and b"progressUrl" in response.data
    response.close()


def test_durations_are_readable(client: FlaskClient, core: Core) -> None:
    add_run(
        core,
        "long",
        status="succeeded",
        started_at=T0,
        finished_at=T0 + timedelta(minutes=4, seconds=5),
    )
    page = client.get("/runs/long").get_data(as_text=True)
    assert "4 min 05 s" in page


def test_a_running_run_with_every_chunk_stored_shows_aggregating(
    client: FlaskClient, core: Core
) -> None:
    add_run(core, "agg", status="running", chunk_count=2, finished_at=None)
    add_chunks(core, "agg", ["succeeded", "succeeded"])
    add_run(core, "half", status="running", chunk_count=2, finished_at=None, minute=1)
    add_chunks(core, "half", ["succeeded", "running"])
    badge = '<span class="status running" data-role="status">{}</span>'
    assert badge.format("aggregating") in client.get("/runs/agg").get_data(as_text=True)
    assert badge.format("running") in client.get("/runs/half").get_data(as_text=True)
    listed = client.get("/runs/").get_data(as_text=True)
    assert listed.count(badge.format("aggregating")) == listed.count(badge.format("running")) == 1
