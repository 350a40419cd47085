"""/docs renders in a real headless Chromium with no network but the server's: Swagger UI
and its assets come from stacksift itself, not from a CDN."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import Server

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install chromium chromium-driver"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    assert not missing, f"{', '.join(missing)} not found: install them with `{INSTALL}`"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path: Selenium Manager fetches nothing
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'chromium'}",
        # No name resolves but the server's address: a CDN request cannot succeed.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
        "--window-size=1280,2000",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def requested_urls(driver: webdriver.Chrome) -> list[str]:
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def test_docs_render_offline(server: Server, browser: webdriver.Chrome) -> None:
    browser.get(server.url + "/docs")
    wait = WebDriverWait(browser, 30)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 20)
    summaries = [
        e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-description")
    ]
    assert "List issues" in summaries and "Create an alert rule" in summaries, summaries
    assert "OAS 3.1" in browser.find_element(By.CSS_SELECTOR, ".info").text
    assert not browser.find_elements(By.CSS_SELECTOR, ".errors-wrapper"), "Swagger UI errors"

    # Open one operation: its documented error answer is there, with our error shape.
    block = next(
        e
        for e in browser.find_elements(By.CSS_SELECTOR, ".opblock")
        if "List issues" in e.text
    )
    block.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda d: block.find_elements(By.CSS_SELECTOR, ".responses-table"))
    codes = [e.text for e in block.find_elements(By.CSS_SELECTOR, ".response-col_status")]
    assert {"200", "400", "401", "403"} <= set(codes) and "422" not in codes, codes

    urls = requested_urls(browser)
    assert any(u.endswith("/openapi.json") for u in urls), urls
    assert any(u.endswith("/docs/static/swagger-ui-bundle.js") for u in urls), urls
    # chrome:// and data: are the browser's own; anything fetched goes to the server.
    fetched = [u for u in urls if urlsplit(u).scheme in ("http", "https", "ws", "wss")]
    elsewhere = [u for u in fetched if urlsplit(u).hostname != "127.0.0.1"]
    assert not elsewhere, f"/docs asked for something outside the server: {elsewhere}"
    severe = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not severe, severe
