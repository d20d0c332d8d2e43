"""The dashboard in a real headless Chromium (Debian's ``chromium`` and ``chromium-driver``),
driven with Selenium, against a real uvicorn server and a real SQLite database.

Outside CI the test skips, with the reason, when the browser is missing; under ``CI=true`` a
missing browser is a failure (``make test`` and ``.ci/run`` install it). Screenshots of the
overview and a message page go to a folder the test prints (``POSTROOM_SCREENSHOTS`` names
another).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytest.importorskip("selenium")
pytest.importorskip("uvicorn")

import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.expected_conditions import staleness_of
from selenium.webdriver.support.wait import WebDriverWait

from postroom.config import load_config
from postroom.store import Store, open_store
from postroom.web import create_app
from tests.conftest import free_port
from tests.webdata import add_message, deliver

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1400",
)
HOSTILE_HTML = (
    "<h1>Spring sale</h1><p id='body'>Prices are down.</p>"
    "<script>document.body.setAttribute('data-ran', 'yes');"
    "parent.document.title = 'pwned';</script>"
    "<img src='http://192.0.2.1/tracker.png' alt='tracker'>"
)


def _browser_paths() -> tuple[str, str]:
    browser = shutil.which("chromium") or "/usr/bin/chromium"
    driver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    if not (os.access(browser, os.X_OK) and os.access(driver, os.X_OK)):
        reason = (
            "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
        )
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{reason} (CI=true: a missing browser is a failure)", pytrace=False)
        pytest.skip(reason)
    return browser, driver


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    binary, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'chromium-profile'}")
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = open_store(f"sqlite:///{tmp_path / 'postroom.db'}")
    s.migrate()
    yield s
    s.close()


@pytest.fixture
def dashboard(tmp_path: Path, store: Store) -> Iterator[str]:
    """A real uvicorn serving the dashboard on a free loopback port; yields its base URL."""
    config = load_config(
        {"email": {"server": {"database": {"url": f"sqlite:///{tmp_path / 'postroom.db'}"}}}}
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "the dashboard did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def screenshots(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    folder = Path(os.environ.get("POSTROOM_SCREENSHOTS") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    with capsys.disabled():
        print(f"\nscreenshots of the dashboard: {folder}")
    return folder


def _seed(store: Store) -> tuple[str, str]:
    now = datetime.now(UTC)
    for minutes in (50, 40, 30):
        sent = add_message(store, created_at=now - timedelta(minutes=minutes), subject="Receipt")
        deliver(store, sent, at=now - timedelta(minutes=minutes - 1), outcome="sent")
    failed = add_message(
        store,
        created_at=now - timedelta(minutes=20),
        subject="Invoice 2026-118 <script>alert(1)</script>",
        to=("nobody@example.org",),
    )
    deliver(store, failed, at=now - timedelta(minutes=19), outcome="failed")
    hostile = add_message(
        store, created_at=now - timedelta(minutes=10), subject="Spring sale", html=HOSTILE_HTML
    )
    deliver(store, hostile, at=now - timedelta(minutes=9), outcome="sent")
    return failed, hostile


def test_overview_search_open_and_retry_in_a_real_browser(
    browser: WebDriver, dashboard: str, store: Store, screenshots: Path
) -> None:
    failed, _ = _seed(store)
    browser.get(f"{dashboard}/")
    assert browser.title == "Overview · postroom"
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 3
    assert browser.save_screenshot(str(screenshots / "overview.png"))

    _follow(browser, browser.find_element(By.LINK_TEXT, "Messages"))
    browser.find_element(By.NAME, "subject").send_keys("invoice")
    _follow(browser, browser.find_element(By.CSS_SELECTOR, "form.search button"))
    rows = browser.find_elements(By.CSS_SELECTOR, "table.messages tbody tr")
    assert len(rows) == 1
    link = rows[0].find_element(By.TAG_NAME, "a")
    assert link.text == "Invoice 2026-118 <script>alert(1)</script>"  # shown as text
    _follow(browser, link)

    assert browser.find_element(By.ID, "status").text == "failed"
    assert browser.save_screenshot(str(screenshots / "message-failed.png"))
    _follow(browser, browser.find_element(By.ID, "retry"))
    assert browser.find_element(By.ID, "status").text == "queued"
    assert "queued again" in browser.find_element(By.ID, "notice").text
    assert browser.find_elements(By.ID, "retry") == []
    assert store.get(failed).status == "queued"


def _follow(browser: WebDriver, element: WebElement) -> None:
    """Click a link or button, and wait until the page it leads to has replaced this one (a
    click does not always wait for the next page, and the old page still matches)."""
    element.click()
    WebDriverWait(browser, 10).until(staleness_of(element))


def test_a_script_in_an_html_email_does_not_run(
    browser: WebDriver, dashboard: str, store: Store, screenshots: Path
) -> None:
    _, hostile = _seed(store)
    browser.get(f"{dashboard}/messages/{hostile}")
    frame = browser.find_element(By.CSS_SELECTOR, "iframe.preview")
    assert frame.get_attribute("sandbox") == ""
    assert browser.save_screenshot(str(screenshots / "message-html.png"))
    browser.switch_to.frame(frame)
    assert browser.find_element(By.ID, "body").text == "Prices are down."
    assert browser.find_element(By.TAG_NAME, "body").get_attribute("data-ran") is None
    image = browser.find_element(By.TAG_NAME, "img")
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 0  # not loaded
    browser.switch_to.default_content()
    assert browser.title == "Spring sale · postroom"
