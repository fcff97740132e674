"""The /docs page works with no network but the gateway's: its assets are the gateway's own.

The browser test drives Debian's chromium (through its chromedriver) with every host name
resolving to nothing, so a script, stylesheet or icon still fetched from a CDN would leave the
page blank and fail the test; it skips, naming the packages, where they are not installed.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import LiveServer

WAIT_S = 15  # each browser wait; the whole test takes about 3 s when it passes
BODY = {"model": "local/echo", "input": "hello from the API page"}


def _asset_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)


def test_the_page_references_only_the_gateways_own_cacheable_assets(server: LiveServer) -> None:
    with server.client() as client:
        page = client.get("/docs")
        assert page.status_code == 200
        urls = _asset_urls(page.text)
        # The Swagger UI script, its preset, the styles and the icon.
        assert len(urls) == 4, urls
        for url in urls:
            assert url.startswith("/docs/assets/"), f"{url} is not served by the gateway"
            asset = client.get(url)
            assert asset.status_code == 200, url
            assert asset.content, url
            cache = asset.headers["cache-control"]
            assert "immutable" in cache and "max-age=31536000" in cache, (url, cache)
        assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page.text)
        # A file that is not in the release answers the API's error envelope, not a page.
        missing = client.get(urls[0].rsplit("/", 1)[0] + "/missing.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "unknown_route"


def test_with_docs_off_neither_the_page_nor_its_assets_are_served(serve_with: Any) -> None:
    with serve_with().client() as client:
        asset = _asset_urls(client.get("/docs").text)[0]
    with serve_with(docs_enabled=False).client() as client:
        for path in ("/docs", "/openapi.json", asset):
            answer = client.get(path)
            assert answer.status_code == 404, path
            assert answer.json()["error"]["code"] == "unknown_route", path


def _browser_binaries() -> tuple[str, str]:
    chromium = shutil.which("chromium")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        pytest.skip(
            "chromium and its driver are not installed (Debian packages `chromium` and "
            "`chromium-driver`); .ci/run installs them"
        )
    return chromium, driver


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium, driver_path = _browser_binaries()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in CI
        "--disable-dev-shm-usage",
        "--disable-gpu",
        # No network but loopback: a CDN reference fails to load instead of passing unseen.
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        "--no-first-run",
        "--window-size=1280,2000",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # An explicit driver path: Selenium Manager, which would download one, never runs.
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def test_try_it_out_on_post_responses_shows_a_200_offline(server: LiveServer, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, WAIT_S)
    browser.get(f"{server.base_url}/docs")

    # The operations list rendered: Swagger UI's script and the document both loaded.
    operation = wait.until(
        ready.presence_of_element_located(
            (
                By.XPATH,
                "//div[contains(@class, 'opblock-post')]"
                "[.//*[contains(@class, 'opblock-summary-path') and @data-path='/v1/responses']]",
            )
        )
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, ".opblock")) > 10

    operation.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait.until(lambda _: operation.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    operation.find_element(By.CSS_SELECTOR, ".try-out__btn").click()

    body = wait.until(
        lambda _: operation.find_element(By.CSS_SELECTOR, "textarea.body-param__text")
    )
    body.send_keys(Keys.CONTROL, "a")
    body.send_keys(Keys.DELETE)
    body.send_keys(json.dumps(BODY))
    operation.find_element(By.CSS_SELECTOR, "button.execute").click()

    status = wait.until(
        lambda _: operation.find_element(
            By.CSS_SELECTOR, ".live-responses-table .response .response-col_status"
        )
    )
    assert status.text.strip() == "200"
    shown = operation.find_element(
        By.CSS_SELECTOR, ".live-responses-table .response .response-col_description"
    ).text
    assert BODY["input"] in shown
    assert '"status": "completed"' in shown

    # Nothing on the page failed to load (a blocked CDN request logs a SEVERE entry).
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
