"""Signing in and out in a real browser."""

from __future__ import annotations

from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser.conftest import screenshot, sign_in, wait_for


def test_sign_in_and_out(page: WebDriver, live_server: str, admin: tuple[str, str]) -> None:
    page.get(f"{live_server}/runs/")
    assert "/login?next=/runs/" in page.current_url
    screenshot(page, "login")
    page.find_element(By.CSS_SELECTOR, "input[name=name]").send_keys(admin[0])
    page.find_element(By.CSS_SELECTOR, "input[name=password]").send_keys("wrong password")
    page.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    assert "wrong name or password" in wait_for(page, "p.error").text
    sign_in(page, live_server, *admin)
    assert page.find_element(By.CSS_SELECTOR, "header.top .who").text == admin[0]
    page.find_element(By.CSS_SELECTOR, "header.top form.logout button").click()
    wait_for(page, "form.login")
    page.get(f"{live_server}/")
    assert "/login" in page.current_url
