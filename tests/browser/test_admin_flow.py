"""The operator's path in a real browser: sign in, schedule a report, run it, read the chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from flask import Flask
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from batch import demo, runs
from batch.core import Core
from batch.cron import CronSchedule
from batch.models import Run, Schedule
from tests.browser.conftest import screenshot, sign_in, wait_for, wait_for_run_page
from tests.conftest import wait_for_run

CRON, ZONE = "5 * * * *", "Europe/Berlin"


def shown_times(driver: WebDriver) -> list[str]:
    # One script: the preview redrawn meanwhile cannot leave a stale element behind.
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('#preview ol li'), e => e.innerText);"
    )


def expected_times() -> list[str]:
    schedule = CronSchedule(CRON, ZONE)
    moments = schedule.upcoming(5, datetime.now(UTC))
    # In the schedule's zone with the weekday, then in UTC (Berlin is never UTC+0).
    return [
        f"{moment.astimezone(schedule.zone):%a %Y-%m-%d %H:%M:%S %Z}"
        f" ({moment.astimezone(UTC):%H:%M:%S} UTC)"
        for moment in moments
    ]


def test_schedule_a_report_run_it_now_and_see_the_chart(
    page: WebDriver, live_server: str, app: Flask, admin: tuple[str, str], core: Core, worker
) -> None:
    now = datetime.now(UTC)
    demo.seed_orders(core.engine, 20_000, end=now)
    # The last day (about 670 orders whatever the hour); five earlier days come before the chart.
    until = now.replace(microsecond=0)
    since = until - timedelta(days=1)
    sign_in(page, live_server, *admin)

    page.get(f"{live_server}/schedules/new")
    page.find_element(By.ID, "name").send_keys("weekly-sales")
    Select(page.find_element(By.ID, "job")).select_by_value("reports.sales_summary")
    wait_for(page, "#param-since").send_keys(since.isoformat())
    page.find_element(By.ID, "param-until").send_keys(until.isoformat())
    page.find_element(By.ID, "cron").send_keys(CRON)
    timezone = page.find_element(By.ID, "timezone")
    timezone.clear()
    timezone.send_keys(ZONE)
    WebDriverWait(page, 10).until(lambda d: shown_times(d) == expected_times())
    screenshot(page, "schedule-form")
    page.find_element(By.CSS_SELECTOR, "#schedule-form button[type=submit]").click()

    WebDriverWait(page, 10).until(lambda d: d.current_url.endswith("/schedules/weekly-sales"))
    with core.reading() as session:
        stored = session.get(Schedule, "weekly-sales")
    assert (stored.cron, stored.timezone, stored.job) == (CRON, ZONE, "reports.sales_summary")
    assert "every hour at :05 (Europe/Berlin)" in page.page_source
    screenshot(page, "schedule")

    page.find_element(By.XPATH, "//button[normalize-space()='Run now']").click()
    WebDriverWait(page, 10).until(lambda d: "/runs/" in d.current_url)
    run_id = page.current_url.rstrip("/").rsplit("/", 1)[-1]
    # The page follows the run by itself until it has finished: no reload from the test.
    wait_for_run_page(page, "succeeded")
    with core.reading() as session:
        run = session.get(Run, run_id)
    assert run.status == "succeeded" and run.trigger.startswith("user:admin")
    north = run.result["regions"]["north"]
    region_rows = wait_for(page, "table.run-result").text
    assert f"{north['orders']:,}" in region_rows or str(north["orders"]) in region_rows
    screenshot(page, "run")

    # Five more daily reports, so the chart has a history to draw.
    celery = app.extensions["batch_celery"]
    for days_back in range(5, 0, -1):
        day = (now - timedelta(days=days_back)).replace(hour=0, minute=0, second=0, microsecond=0)
        window = {"since": day.isoformat(), "until": (day + timedelta(days=1)).isoformat()}
        wait_for_run(
            core, runs.submit_run(core, celery, "reports.sales_summary", window, trigger="test")
        )

    page.get(f"{live_server}/runs/")
    wait_for(page, "table")
    screenshot(page, "runs")

    page.get(f"{live_server}/results/reports.sales_summary")
    chart = wait_for(page, "svg")
    assert chart.is_displayed()
    for region in run.result["regions"]:
        assert region in chart.get_attribute("innerHTML")
    screenshot(page, "results")
    with core.reading() as session:
        assert len(session.scalars(select(Run.id).where(Run.status == "succeeded")).all()) == 6
    page.get(f"{live_server}/")
    assert "weekly-sales" in wait_for(page, "main").text
    screenshot(page, "overview")
