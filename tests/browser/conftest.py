"""Browser fixtures: the real app on a local port and headless Chromium driving it."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from werkzeug.serving import BaseWSGIServer, make_server

from batch.redis_server import free_port

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
#: Where screenshots of the main pages go when set (the README's come from docs/img/).
SCREENSHOT_DIR = os.environ.get("BATCH_SCREENSHOT_DIR", "")


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The app served on a free local port by a threaded WSGI server; yields its base URL."""
    port = free_port()
    server: BaseWSGIServer = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser() -> Iterator[WebDriver]:
    """Headless Chromium; a missing browser is a failure with the fix, never a skip."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not shutil.which(path)]
    if missing:
        pytest.fail(
            f"browser tests need {', '.join(missing)}: apt-get install chromium chromium-driver",
            pytrace=False,
        )
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    yield driver
    driver.quit()


@pytest.fixture
def page(browser: WebDriver) -> Iterator[WebDriver]:
    """The browser with no cookies left from an earlier test."""
    browser.delete_all_cookies()
    yield browser


def wait_for(driver: WebDriver, css: str, timeout: float = 20):
    """The first element matching ``css`` once it is present."""
    return WebDriverWait(driver, timeout).until(lambda d: d.find_element(By.CSS_SELECTOR, css))


def wait_for_run_page(driver: WebDriver, status: str, timeout: float = 60) -> None:
    """Wait until the run page shown says ``status`` (it follows its run by itself, and
    reloads once when it finishes: an element read across that reload is stale)."""
    WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,)).until(
        lambda d: (
            d.find_element(By.CSS_SELECTOR, ".run-facts").get_attribute("data-status") == status
        )
    )


def screenshot(driver: WebDriver, name: str) -> None:
    """Save a full-width screenshot when BATCH_SCREENSHOT_DIR is set."""
    if SCREENSHOT_DIR:
        Path(SCREENSHOT_DIR).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(SCREENSHOT_DIR) / f"{name}.png"))


def sign_in(driver: WebDriver, base: str, name: str, password: str) -> None:
    """Sign in through the login form as a person would."""
    driver.get(f"{base}/login")
    wait_for(driver, "input[name=name]").send_keys(name)
    driver.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys(password)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    wait_for(driver, "header.top")
