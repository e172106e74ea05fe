"""An operator's daily work in a real browser: find runs (at a phone's width), run a job with
their own params, retry only the failed chunks, read one schedule's results, and disable
schedules in bulk. Every outcome is checked against SQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from celery import Celery
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from batch.core import Core
from batch.models import Run, Schedule
from tests.browser.conftest import screenshot, sign_in, wait_for, wait_for_run_page
from tests.test_engine import expected_sum
from tests.test_queries import SALES, SUMS, add_run
from tests.test_retries import chunk_rows, failed_run
from tests.web.test_schedules_pages import add_schedule, seed_many

PHONE, DESKTOP = (390, 844), (1280, 900)


@pytest.fixture
def phone(page: WebDriver) -> Iterator[WebDriver]:
    """The browser at a phone's width, back at the desktop's afterwards."""
    page.set_window_size(*PHONE)
    yield page
    page.set_window_size(*DESKTOP)


def attributes(driver: WebDriver, css: str, name: str) -> list[str]:
    """``name`` of every element matching ``css``, read in one script: a page that reloads
    meanwhile cannot leave a stale element behind."""
    return driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]),"
        " e => e.getAttribute(arguments[1]));",
        css,
        name,
    )


def listed_runs(driver: WebDriver) -> list[str]:
    return attributes(driver, "table.runs tr[data-run-id]", "data-run-id")


def shown_errors(driver: WebDriver) -> dict[str, str]:
    return driver.execute_script(
        "return Object.fromEntries(Array.from(document.querySelectorAll('.field-error'),"
        " e => [e.dataset.field, e.innerText.trim()]));"
    )


def no_sideways_scroll(driver: WebDriver) -> bool:
    return driver.execute_script(
        "return document.documentElement.scrollWidth <= document.documentElement.clientWidth"
    )


def fill(driver: WebDriver, name: str, text: str) -> None:
    field = driver.find_element(By.CSS_SELECTOR, f"form.filters [name='{name}']")
    field.clear()
    field.send_keys(text)


def test_find_runs_by_filters_and_short_id_at_a_phones_width(
    phone: WebDriver, live_server: str, core: Core, celery_app: Celery, admin: tuple[str, str]
) -> None:
    add_schedule(core, celery_app)  # "hourly"
    for minute in range(12):
        add_run(core, f"{minute:02d}aa0000-0000-4000-8000-000000000000", job=SALES,
                minute=minute, status="failed" if minute % 3 == 0 else "succeeded",
                schedule_name="hourly" if minute % 2 == 0 else None,
                trigger="schedule:hourly" if minute % 2 == 0 else "user:ann")  # fmt: skip
    with core.reading() as session:  # what the filters must find, straight from SQL
        expected = session.scalars(
            select(Run.id)
            .where(Run.status == "failed", Run.schedule_name == "hourly")
            .order_by(Run.created_at.desc())
        ).all()
    assert len(expected) == 2
    sign_in(phone, live_server, *admin)

    phone.get(f"{live_server}/runs/")
    wait_for(phone, "form.filters")
    Select(phone.find_element(By.NAME, "status")).select_by_value("failed")
    fill(phone, "schedule", "hourly")
    fill(phone, "since", "2026-03-01")
    phone.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    WebDriverWait(phone, 10).until(lambda d: "status=failed" in d.current_url)
    query = parse_qs(urlsplit(phone.current_url).query)
    assert (query["status"], query["schedule"], query["since"]) == (
        ["failed"],
        ["hourly"],
        ["2026-03-01"],
    )
    assert listed_runs(phone) == expected
    assert no_sideways_scroll(phone)
    screenshot(phone, "runs-filtered-phone")

    # Two bad filters: both named at their fields at once, what was typed kept, nothing listed.
    fill(phone, "since", "yesterday")
    fill(phone, "schedule", "a b")
    phone.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    wait_for(phone, "#filter-errors")
    assert shown_errors(phone) == {
        "schedule": "bad schedule 'a b': not a schedule name",
        "since": "bad since 'yesterday': expected a date (2026-12-01) or a date and time"
        " (2026-12-01T06:00)",
    }
    assert phone.find_element(By.NAME, "since").get_attribute("value") == "yesterday"
    assert listed_runs(phone) == [] and no_sideways_scroll(phone)

    # The 8 characters shown everywhere find the run, and open it.
    short = expected[0][:8]
    phone.get(f"{live_server}/runs/")
    fill(phone, "q", short)
    phone.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    WebDriverWait(phone, 10).until(lambda d: listed_runs(d) == [expected[0]])
    phone.find_element(By.LINK_TEXT, short).click()
    WebDriverWait(phone, 10).until(lambda d: d.current_url.endswith(f"/runs/{expected[0]}"))
    assert wait_for(phone, ".run-facts").get_attribute("data-status") == "failed"
    assert no_sideways_scroll(phone)


def test_run_a_job_with_own_params_errors_at_the_field_first(
    page: WebDriver, live_server: str, core: Core, admin: tuple[str, str], worker: Path
) -> None:
    sign_in(page, live_server, *admin)
    page.get(f"{live_server}/runs/")
    page.find_element(By.LINK_TEXT, "Run a job").click()
    # The browser itself refuses letters in a number field: text fields reach the server.
    Select(wait_for(page, "#choose-job")).select_by_value(SALES)
    page.find_element(By.XPATH, "//button[normalize-space()='Show its params']").click()
    wait_for(page, "#param-since").send_keys("monday")
    page.find_element(By.ID, "param-until").send_keys("2026-01-01T00:00")
    page.find_element(By.XPATH, "//button[normalize-space()='Run now']").click()
    wait_for(page, ".field-error")
    assert shown_errors(page) == {  # both at once, each once, in words
        "params.since": "must be a date and time with its zone, such as"
        " 2026-12-01T06:00:00+00:00, not 'monday'",
        "params.until": "must name its zone, such as 2026-12-01T06:00:00+00:00 (Z for UTC)",
    }
    assert page.find_element(By.ID, "param-since").get_attribute("value") == "monday"
    screenshot(page, "run-form")
    with core.reading() as session:
        assert session.scalars(select(Run.id)).all() == []

    Select(page.find_element(By.ID, "choose-job")).select_by_value(SUMS)
    page.find_element(By.XPATH, "//button[normalize-space()='Show its params']").click()
    wait_for(page, "#param-n").send_keys("700")
    page.find_element(By.XPATH, "//button[normalize-space()='Run now']").click()
    WebDriverWait(page, 10).until(lambda d: "/runs/new" not in d.current_url)
    run_id = page.current_url.rstrip("/").rsplit("/", 1)[-1]
    wait_for_run_page(page, "succeeded")
    with core.reading() as session:
        run = session.get_one(Run, run_id)
    assert (run.job, run.params["n"], run.trigger) == (SUMS, 700, "user:admin")
    assert run.result == {"sum": expected_sum(700)}


def test_retry_failed_chunks_reruns_only_them_and_the_result_is_exact(
    page: WebDriver,
    live_server: str,
    core: Core,
    celery_app: Celery,
    admin: tuple[str, str],
    worker: Path,
    tmp_path: Path,
) -> None:
    outage = tmp_path / "outage"
    run_id = failed_run(core, celery_app, outage)
    before = chunk_rows(core, run_id)
    sign_in(page, live_server, *admin)
    page.get(f"{live_server}/runs/{run_id}")
    outage.unlink()  # the cause is gone
    button = page.find_element(By.XPATH, "//button[normalize-space()='Retry failed chunks']")
    assert "runs chunk 5 again in this run" in button.find_element(By.XPATH, "..").text
    screenshot(page, "run-failed")
    button.click()
    wait_for_run_page(page, "succeeded")
    assert page.current_url.endswith(f"/runs/{run_id}")  # in place: the same run
    assert "retry chunks 5" in wait_for(page, "#run-history").text
    with core.reading() as session:
        run = session.get_one(Run, run_id)
    assert run.result == {"sum": expected_sum(800)}
    # Only chunk 5 ran again, after its failure; the seven stored partials were kept.
    after = chunk_rows(core, run_id)
    assert {i: after[i] for i in after if i != 5} == {i: before[i] for i in before if i != 5}
    assert after[5][0] == "succeeded" and after[5][2] > before[5][3]


def test_results_of_one_schedule_over_a_date_range(
    page: WebDriver, live_server: str, core: Core, celery_app: Celery, admin: tuple[str, str]
) -> None:
    add_schedule(core, celery_app)
    for minute in range(8):
        scheduled = minute % 2 == 0
        window = {
            "since": f"2026-03-{minute + 1:02d}T00:00:00Z",
            "until": f"2026-03-{minute + 1:02d}T01:00:00Z",
        }
        regions = {"north": {"orders": 100 + minute, "units": 1, "revenue_cents": 500,
                             "avg_order_value_cents": 5}}  # fmt: skip
        add_run(core, f"r{minute}", job=SALES, minute=minute, params=window,
                result={"regions": regions},
                schedule_name="hourly" if scheduled else None,
                trigger="schedule:hourly" if scheduled else "user:ann")  # fmt: skip
    with core.reading() as session:
        expected = session.scalars(
            select(Run.id)
            .where(Run.job == SALES, Run.schedule_name == "hourly", Run.status == "succeeded")
            .order_by(Run.created_at.desc())
        ).all()
    sign_in(page, live_server, *admin)
    page.get(f"{live_server}/results/{SALES}")
    fill(page, "schedule", "hourly")
    page.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    WebDriverWait(page, 10).until(lambda d: "schedule=hourly" in d.current_url)
    assert attributes(page, "#results-table tbody tr[data-run-id]", "data-run-id") == expected
    # Each row's window names its full date and UTC; the chart draws only these runs.
    assert "2026-03-07 00:00 – 01:00 UTC" in wait_for(page, "#results-table td.window").text
    chart = wait_for(page, ".chart svg").get_attribute("innerHTML")
    assert "2026-03-07" in chart and "2026-03-08" not in chart


def test_disable_schedules_in_bulk(
    page: WebDriver,
    live_server: str,
    core: Core,
    celery_app: Celery,
    admin: tuple[str, str],
    tmp_path: Path,
) -> None:
    seed_many(core, celery_app, tmp_path / "schedules", 4)
    sign_in(page, live_server, *admin)
    page.get(f"{live_server}/schedules/")
    for name in ("s-001", "s-003"):
        wait_for(page, f"input[aria-label='select {name}']").click()
    page.find_element(By.XPATH, "//button[normalize-space()='Disable selected']").click()
    assert "2 of 2 selected schedule(s) disabled." in wait_for(page, ".flash").text
    with core.reading() as session:
        enabled = dict(session.execute(select(Schedule.name, Schedule.enabled)).all())
    assert enabled == {"s-000": True, "s-001": False, "s-002": True, "s-003": False}
