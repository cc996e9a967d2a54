"""The worker's page in a real headless browser (Debian's chromium driven by selenium): it
shows what fires (grouped, with age and value), the delivered notification, channel health
and stage lag, and refreshes by itself. A screenshot is saved for people to look at."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.integration.conftest import BrokerHandle
from tests.integration.ops.support import (
    broker_env,
    get,
    new_entity,
    produce_frames,
    wait_until,
    worker_process,
)
from tests.support.webhook import webhook_server

pytestmark = pytest.mark.integration

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")


def _browser() -> tuple[str, str]:
    binary = next((found for name in CHROMIUM if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        require_service("chromium", "install Debian's chromium and chromium-driver (.ci/run does)")
    assert binary is not None and driver is not None
    return binary, driver


def _driver(binary: str, driver: str):  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(arg)
    options.add_argument("--disable-dev-shm-usage")
    return webdriver.Chrome(service=Service(driver), options=options)


def _keep(shot: Path) -> None:
    """Copy the screenshot to ``STREAMWARDEN_SCREENSHOT_DIR`` when set (for people)."""
    keep = os.environ.get("STREAMWARDEN_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / "worker-page.png")


async def test_page_shows_firing_alert_notifications_and_stages(
    fresh_broker: BrokerHandle, tmp_path: Path, unique_suffix: str
) -> None:
    binary, driver_path = _browser()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    app_id = f"sw-page-{unique_suffix}"
    env = broker_env(fresh_broker, app_id, 2)
    hot, warm = new_entity(), new_entity()
    with (
        webhook_server() as hook,
        worker_process(env, tmp_path, hook.url("/page")) as (proc, base, log),
    ):
        wait_until("ready", lambda: get(f"{base}/readyz")[0] == 200, 120, proc, log)
        browser = _driver(binary, driver_path)
        try:
            browser.get(f"{base}/")
            wait = WebDriverWait(browser, 30)
            wait.until(lambda b: b.find_element(By.ID, "ready").text == "ready")
            assert "nothing is firing" in browser.find_element(By.ID, "firing").text
            # The page was loaded before anything fired: what follows arrives by its own
            # refresh, not by a reload.
            await produce_frames(fresh_broker.bootstrap, hot, [61.5])
            await produce_frames(fresh_broker.bootstrap, warm, [47.25])
            wait_for = WebDriverWait(browser, 60, poll_frequency=0.5)
            wait_for.until(lambda b: warm in b.find_element(By.ID, "firing").text)
            wait_for.until(lambda b: "delivered" in b.find_element(By.ID, "notifications").text)

            firing = browser.find_element(By.ID, "firing")
            groups = firing.find_elements(By.CSS_SELECTOR, "tr.group")
            assert [g.text.split("\n")[0].split(" critical")[0] for g in groups] == [
                "ops-power-high (2)"
            ]
            rows = {
                r.find_elements(By.TAG_NAME, "td")[0].text: [
                    c.text for c in r.find_elements(By.TAG_NAME, "td")
                ]
                for r in firing.find_elements(By.CSS_SELECTOR, "tr[data-kind=data]")
            }
            assert set(rows) == {hot, warm}
            assert rows[hot][1] == "critical"
            assert rows[hot][2].endswith("s")  # age
            assert rows[hot][3] == "61.5"
            assert rows[warm][3] == "47.25"
            assert rows[warm][4] == f"{warm} draws 47.25 kW"
            sev = firing.find_element(By.CSS_SELECTOR, "tr[data-kind=data] td.sev-critical")
            assert sev.value_of_css_property("color") == "rgba(198, 40, 40, 1)"

            notifications = browser.find_element(By.ID, "notifications").text
            assert "hook" in notifications and "ops-power-high" in notifications
            channels = browser.find_element(By.ID, "channels").text
            assert "hook" in channels
            stages = browser.find_element(By.ID, "stages").text
            for stage in ("normalize", "evaluate", "notify"):
                assert stage in stages
            assert "no silences" in browser.find_element(By.ID, "silences").text
            pending = browser.find_element(By.ID, "pending").text
            assert "ops-power-sustained" in pending and hot in pending and warm not in pending
            # No external assets: every resource the page loaded came from the worker.
            resources = browser.execute_script(
                "return performance.getEntriesByType('resource').map(e => e.name)"
            )
            assert resources and all(r.startswith(base) for r in resources), resources

            shot = tmp_path / "page.png"
            assert browser.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
            _keep(shot)
        finally:
            browser.quit()
