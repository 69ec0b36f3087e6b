"""A live daphne server and Debian's Chromium (never a downloaded browser)."""

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, sync_playwright

from tests.daphne_server import DaphneServer

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def shop_server() -> Iterator[DaphneServer]:
    server = DaphneServer().start()
    try:
        yield server
    finally:
        server.stop()
        print(f"daphne log ({server.log_path}):\n{server.logs()}")  # shown when a test fails


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
