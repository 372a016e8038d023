"""Fixtures for the browser tests: Debian's Chromium through Playwright, the live server, and the
PromptJuggler emulator sending signed webhooks to the live server's webhook URL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.urls import reverse

from promptjuggler_django.testing import FakePromptJuggler

# Playwright's sync API runs an event loop in the test thread; the ORM calls the tests make
# between browser steps are still synchronous.
os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: How long an expectation waits for the page (the live status polls every 2 s).
EXPECT_TIMEOUT_MS = 15_000


def _require_chromium() -> None:
    if CHROMIUM.exists():
        return
    reason = f"{CHROMIUM} is missing (apt-get install -y chromium chromium-driver)"
    if os.environ.get("PJ_REQUIRE_BROWSER"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    _require_chromium()
    from playwright.sync_api import expect, sync_playwright

    expect.set_options(timeout=EXPECT_TIMEOUT_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_page(chromium: Any, live_server: Any) -> Iterator[Any]:
    """Open pages in fresh browser contexts (one per user), closed after the test."""
    contexts = []

    def open_page() -> Any:
        context = chromium.new_context(base_url=live_server.url)
        context.set_default_timeout(EXPECT_TIMEOUT_MS)
        contexts.append(context)
        return context.new_page()

    yield open_page
    for context in contexts:
        context.close()


@pytest.fixture
def emulator(live_server: Any, settings: Any) -> Iterator[FakePromptJuggler]:
    """The emulator, wired both ways: the app calls it, it sends webhooks to the live server."""
    config = settings.PROMPTJUGGLER
    emulator = FakePromptJuggler(
        config["API_KEY"],
        webhook_url=live_server.url + reverse("promptjuggler_django:webhook"),
        webhook_secret=config["WEBHOOK_SECRETS"][0],
        processing_delay=None,  # the tests finish processing when they choose
        knowledge_bases=[config["DEFAULT_KNOWLEDGE_BASE"]],
    )
    with emulator:
        settings.PROMPTJUGGLER = {**config, "BASE_URL": emulator.url}
        yield emulator


def log_in(page: Any, username: str, password: str, start: str) -> None:
    """Open ``start``, get sent to the login page, log in, and land back on ``start``."""
    page.goto(start)
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("#login-form [type=submit]")
    page.wait_for_url(f"**{start}")


def save_screenshot(page: Any, name: str, **options: Any) -> None:
    """Save ``page`` as ``$PJ_SAVE_SCREENSHOTS/<name>`` when the variable is set (the docs)."""
    directory = os.environ.get("PJ_SAVE_SCREENSHOTS")
    if not directory:
        return
    Path(directory).mkdir(parents=True, exist_ok=True)
    page.mouse.move(0, 0)  # no hover state in the picture
    page.screenshot(path=Path(directory) / name, animations="disabled", **options)
