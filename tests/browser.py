"""Debian's Chromium driven by selenium through Debian's chromedriver (no browser download).

Skipped when either binary is missing, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest

CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"
ARTIFACTS = os.environ.get("TEST_ARTIFACTS", os.path.join(tempfile.gettempdir(), "test-artifacts"))


def _binary(names: tuple[str, ...]) -> str | None:
    for name in names:
        path = shutil.which(name) or (
            f"/usr/bin/{name}" if os.path.exists(f"/usr/bin/{name}") else None
        )
        if path:
            return path
    return None


def browser_paths() -> tuple[str, str]:
    chromium, driver = _binary(CHROMIUM), _binary((DRIVER,))
    if chromium and driver:
        return chromium, driver
    missing = "chromium" if not chromium else "chromedriver"
    reason = f"{missing} is not installed (Debian packages chromium and chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; required under CI=true")
    pytest.skip(reason)


@pytest.fixture
def browser() -> Iterator[Any]:
    chromium, driver_path = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    # No network here but loopback: Chromium's own background traffic is switched off.
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[dict[str, Any]]:
    return [entry for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]


def save_screenshot(driver: Any, name: str) -> str:
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    driver.save_screenshot(path)
    return path


def navigating(driver: Any, action: Callable[[], object], timeout: float = 10.0) -> None:
    """Do what loads a new page (a click, a submit) and wait until it has replaced the old
    one: WebDriver's click does not wait for the navigation it starts."""
    from selenium.webdriver.support.expected_conditions import staleness_of
    from selenium.webdriver.support.wait import WebDriverWait

    old = driver.find_element("tag name", "html")
    action()
    WebDriverWait(driver, timeout).until(staleness_of(old))
