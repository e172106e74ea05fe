"""Every admin page at a phone's width and at a desktop's: no sideways scrolling of the page,
and no WCAG 2 A/AA violation that axe-core (vendored, run offline) finds; a skip link first."""

from __future__ import annotations

from pathlib import Path

import pytest
import selenium_axe_python
from celery import Celery
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from batch import alerts
from batch.core import Core
from tests.browser.conftest import sign_in, wait_for
from tests.test_queries import SALES, add_chunks, add_run
from tests.web.test_schedules_pages import add_schedule

AXE_SOURCE = (Path(selenium_axe_python.__file__).parent / "axe-core" / "axe.min.js").read_text()
PHONE, DESKTOP = (390, 844), (1366, 900)
PAGES = [
    "/",
    "/schedules/",
    "/schedules/hourly",
    "/schedules/new",
    "/schedules/hourly/edit",
    "/runs/",
    "/runs/?status=failed&trigger=schedule&since=2026-03-01",
    # Errors at the fields: still readable, labelled and tied to their inputs.
    "/runs/?since=yesterday&schedule=a%20b",
    "/schedules/?queue=nope&enabled=maybe",
    "/runs/failed-run",
    "/runs/sales-run",
    "/runs/new",
    "/results/",
    f"/results/{SALES}",
    "/access",
]
REGIONS = ("central", "east", "north", "south", "west")


def seed(core: Core, celery_app: Celery) -> None:
    add_schedule(core, celery_app)
    for minute in range(12):
        regions = {
            region: {"orders": 10 + minute, "units": 20, "revenue_cents": 123_456 * (i + 1),
                     "avg_order_value_cents": 999}
            for i, region in enumerate(REGIONS)
        }  # fmt: skip
        window = {
            "since": f"2026-03-01T{minute:02d}:00:00Z",
            "until": f"2026-03-01T{minute:02d}:59:00Z",
        }
        add_run(core, f"sales-{minute}", job=SALES, minute=minute, params=window,
                result={"regions": regions, "orders": 50}, schedule_name="hourly",
                trigger="schedule:hourly")  # fmt: skip
    add_run(core, "sales-run", job=SALES, minute=20, result={"regions": regions, "orders": 50})
    add_run(core, "failed-run", job=SALES, minute=21, status="failed",
            error="chunk 1: ValueError: no", chunk_count=2)  # fmt: skip
    add_chunks(core, "failed-run", ["succeeded", "failed"])
    with core.transaction() as session:  # an open alert on the overview and the schedule's page
        alerts.raise_alert(session, "run_failed:failed-run", "run_failed",
                           "a run of hourly failed: chunk 1: ValueError: no",
                           schedule="hourly", run_id="failed-run")  # fmt: skip


def axe_violations(driver: WebDriver) -> list[str]:
    """axe-core's WCAG 2 A and AA violations on the page, one line each."""
    driver.execute_script(AXE_SOURCE)
    found = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}})"
        ".then(r => done(r.violations.map(v => v.id + ': ' + v.help + ' at '"
        " + v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', '))))"
        ".catch(e => done(['axe failed: ' + e]));"
    )
    return list(found)


def sideways(driver: WebDriver) -> int:
    """How many pixels the page is wider than the window (0: no sideways scrolling)."""
    return driver.execute_script(
        "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
    )


@pytest.mark.parametrize("size", [PHONE, DESKTOP], ids=["390px", "1366px"])
def test_every_page_fits_and_passes_axe(
    page: WebDriver, live_server: str, admin: tuple[str, str], core: Core, celery_app: Celery,
    size: tuple[int, int],
) -> None:  # fmt: skip
    seed(core, celery_app)
    page.set_window_size(*size)
    try:
        page.get(f"{live_server}/login")
        wait_for(page, "form.login")
        problems = {"/login": axe_violations(page)} if axe_violations(page) else {}
        sign_in(page, live_server, *admin)
        for path in PAGES:
            page.get(f"{live_server}{path}")
            wait_for(page, "main h1")
            found = axe_violations(page)
            if wide := sideways(page):
                found.append(f"the page scrolls sideways by {wide}px")
            if found:
                problems[path] = found
        report = "\n".join(f"{path}: {line}" for path, lines in problems.items() for line in lines)
        assert problems == {}, report
    finally:
        page.set_window_size(1280, 900)


def test_the_first_tab_reaches_a_skip_link_to_the_content(
    page: WebDriver, live_server: str, admin: tuple[str, str]
) -> None:
    sign_in(page, live_server, *admin)
    page.get(f"{live_server}/runs/")
    wait_for(page, "main h1")
    page.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    link = page.switch_to.active_element
    assert (link.text, link.get_attribute("href")) == (
        "Skip to content",
        f"{live_server}/runs/#main",
    )
    assert link.is_displayed()
    link.send_keys(Keys.ENTER)
    assert page.switch_to.active_element.get_attribute("id") == "main"
