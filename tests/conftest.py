"""Shared pytest fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from broker_support import Mosquitto, make_tls_files, missing_broker_tools

#: Users of the ``mosquitto_tls_auth`` broker, name -> password.
BROKER_USERS = {"agent": "s3cret", "viewer": "v1ew"}


@pytest.fixture
def require_broker() -> None:
    """Skips the test when mosquitto is missing; fails it instead if PRESENCE_REQUIRE_BROKER is set (CI)."""
    missing = missing_broker_tools()
    if not missing:
        return
    reason = f"{', '.join(missing)} not installed (Debian packages: mosquitto mosquitto-clients)"
    if os.environ.get("PRESENCE_REQUIRE_BROKER", "") not in ("", "0"):
        pytest.fail(f"PRESENCE_REQUIRE_BROKER is set but {reason}")
    pytest.skip(reason)


@pytest.fixture
def mosquitto(require_broker: None, tmp_path: Path) -> Iterator[Mosquitto]:
    """A plain-MQTT broker with anonymous access on a private loopback port."""
    with Mosquitto(tmp_path / "mosquitto") as broker:
        yield broker


@pytest.fixture
def mosquitto_tls_auth(require_broker: None, tmp_path: Path) -> Iterator[Mosquitto]:
    """A TLS broker (CA in ``.tls.ca_cert``) that admits only BROKER_USERS (also in ``.users``)."""
    tls = make_tls_files(tmp_path / "tls")
    with Mosquitto(tmp_path / "mosquitto", tls=tls, users=BROKER_USERS) as broker:
        yield broker


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """One headless Chromium for the session (Playwright driving /usr/bin/chromium).

    Skips when it or Playwright is missing; fails instead if PRESENCE_REQUIRE_BROWSER is set (CI).
    """
    from browser_support import CHROMIUM, CHROMIUM_ARGS, missing_browser

    missing = missing_browser()
    if missing:
        if os.environ.get("PRESENCE_REQUIRE_BROWSER", "") not in ("", "0"):
            pytest.fail(f"PRESENCE_REQUIRE_BROWSER is set but {missing}")
        pytest.skip(missing)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser page (its own context: no cookies shared between tests), 1400x800."""
    context = chromium.new_context(viewport={"width": 1400, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    yield page
    context.close()
    assert errors == [], f"the page raised: {errors}"
