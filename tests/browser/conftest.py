"""Browser fixtures: the whole service in real processes, and Debian's headless Chromium driven
through its ChromeDriver (Selenium), with the browser's console log kept for the tests to check."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.processes import Service
from tests.conftest import shared

CHROMIUM = os.environ.get("DESCENT_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("DESCENT_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


def require_browser() -> None:
    """Skip without Chromium, its driver or Selenium; under CI (``CI=true``) fail instead."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if missing:
        message = f"browser tests need {', '.join(missing)} (apt-get install chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; under CI=true they are required")
        pytest.skip(message)


class Browser:
    """A headless Chromium with a fresh profile; ``console()`` returns (and forgets) its log."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service as DriverService

        self.profile = tempfile.mkdtemp(prefix="descent-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-extensions", "--disable-default-apps", "--no-first-run", "--no-default-browser-check",
                    "--window-size=1280,1000", f"--user-data-dir={self.profile}"):
            options.add_argument(arg)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(service=DriverService(executable_path=CHROMEDRIVER), options=options)
        self.driver.set_page_load_timeout(30)
        self.driver.set_script_timeout(30)
        self.logs: list[dict[str, Any]] = []

    def console(self) -> list[dict[str, Any]]:
        entries = self.driver.get_log("browser")
        self.logs.extend(entries)
        return entries

    def severe(self, allow: Callable[[dict[str, Any]], bool] = lambda entry: False) -> list[dict[str, Any]]:
        """The SEVERE console entries (errors, failed loads, CSP violations) since the last call."""
        return [e for e in self.console() if e["level"] == "SEVERE" and not allow(e)]

    def wait(self, condition: Callable[[Any], Any], what: str, timeout: float = 60) -> Any:
        """Wait until ``condition(driver)`` is truthy (exceptions count as not yet); fail naming ``what``."""
        deadline = time.time() + timeout
        last: Exception | None = None
        while time.time() < deadline:
            try:
                value = condition(self.driver)
                if value:
                    return value
            except Exception as exc:  # noqa: BLE001 - the page is still changing
                last = exc
            time.sleep(0.1)
        self.screenshot(f"timeout-{what[:40].replace(' ', '_')}")
        raise AssertionError(f"timed out waiting until {what} (last error: {last}); console: {self.console()}")

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def screenshot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    require_browser()
    b = Browser()
    try:
        yield b
    finally:
        b.quit()


@pytest.fixture(scope="module")
def service(embedded_service: Service) -> Iterator[Service]:
    """The embedded service (API + one CPU worker) this test process shares (tests/conftest.py)."""
    yield from shared(embedded_service)
