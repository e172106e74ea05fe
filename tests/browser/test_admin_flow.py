"""The operator's path in a real browser: sign in, schedule a report, run it, read the chart."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait
from sqlalchemy import select

from batch import demo
from batch.core import Core
from batch.cron import CronSchedule
from batch.models import Run, Schedule
from tests.browser.conftest import screenshot, sign_in, wait_for

CRON, ZONE = "5 * * * *", "Europe/Berlin"


def shown_times(driver: WebDriver) -> list[str]:
    return [item.text for item in driver.find_elements(By.CSS_SELECTOR, "#preview ol li")]


def expected_times() -> list[str]:
    schedule = CronSchedule(CRON, ZONE)
    moments = schedule.upcoming(5, datetime.now(UTC))
    return [moment.astimezone(schedule.zone).isoformat().replace("T", " ") for moment in moments]


def test_schedule_a_report_run_it_now_and_see_the_chart(
    page: WebDriver, live_server: str, admin: tuple[str, str], core: Core, worker
) -> None:
    now = datetime.now(UTC)
    demo.seed_orders(core.engine, 20_000, end=now)
    since, until = (now - timedelta(days=7)).replace(microsecond=0), now.replace(microsecond=0)
    sign_in(page, live_server, *admin)
    screenshot(page, "overview")

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
    WebDriverWait(page, 60).until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, ".run-facts").get_attribute("data-status")
            == "succeeded"
        )
    )
    with core.reading() as session:
        run = session.get(Run, run_id)
    assert run.status == "succeeded" and run.trigger.startswith("user:admin")
    north = run.result["regions"]["north"]
    region_rows = wait_for(page, "table.regions").text
    assert f"{north['orders']:,}" in region_rows or str(north["orders"]) in region_rows
    screenshot(page, "run")

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
        assert session.scalars(select(Run.id).where(Run.job == "reports.sales_summary")).all() == [
            run_id
        ]
