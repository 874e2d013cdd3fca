"""Browser fixtures for the tests of the two pages: Debian's chromium driven by Playwright.

Never a downloaded browser: `executable_path` is the distribution's chromium
(`apt-get install -y chromium`). Without playwright or chromium these tests
skip, unless NANE_REQUIRE_BROWSER=1 (CI) makes that a failure. Each test gets
fresh browser contexts (so fresh localStorage); when it fails, every page it
opened is saved at phone and desktop width into `test-artifacts/`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

# In CI a missing browser is a failure, not a skip (.ci/run sets this).
REQUIRED = os.environ.get("NANE_REQUIRE_BROWSER") == "1"

try:
    from playwright import sync_api
except ImportError:
    if REQUIRED:
        raise
    pytest.skip("pip install playwright (the Python package only)", allow_module_level=True)
expect = sync_api.expect

CHROMIUM = os.environ.get("NANE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--no-default-browser-check", "--disable-extensions",
]
BROWSER_TIMEOUT_MS = 10_000  # every expect and every action waits at most this long
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}

expect.set_options(timeout=BROWSER_TIMEOUT_MS)


# Module scope, not session: each test module imports this fixture, and two
# sync Playwright instances may not be alive at once in one thread.
@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        missing = f"{CHROMIUM} is missing: apt-get install -y chromium"
        pytest.fail(missing) if REQUIRED else pytest.skip(missing)
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000)
        yield launched
        launched.close()


@pytest.fixture
def open_page(browser, request):
    """Open pages, each in its own context; `page.dialogs` and `page.errors` record trouble.

    A dialog (alert, confirm) is what an injected script would open first, so
    every one is recorded and dismissed; `errors` holds uncaught page errors.
    """
    contexts, pages = [], []
    failed_before = request.session.testsfailed

    def opener(viewport: dict = DESKTOP):
        context = browser.new_context(viewport=viewport)
        context.set_default_timeout(BROWSER_TIMEOUT_MS)
        contexts.append(context)
        page = context.new_page()
        page.dialogs = []
        page.errors = []
        page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        pages.append(page)
        return page

    yield opener
    # The call phase's report is in by now: a failed test has raised testsfailed.
    if request.session.testsfailed > failed_before:
        save_screenshots(request.node.name, pages)
    for context in contexts:
        context.close()


def save_screenshots(test_name: str, pages) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    for number, page in enumerate(pages, 1):
        if page.is_closed():
            continue
        for label, viewport in (("phone", PHONE), ("desktop", DESKTOP)):
            try:
                page.set_viewport_size(viewport)
                page.screenshot(path=str(ARTIFACTS / f"{stem}-page{number}-{label}.png"),
                                timeout=5_000)
            except Exception as error:  # a screenshot must not hide the real failure
                print(f"screenshot of {stem} page {number} failed: {error!r}")


def login(page, server, username: str) -> None:
    """Open the chat as `username` and wait until it is connected."""
    page.goto(server.base + "/")
    page.fill("#username", username)
    page.click("#login-submit")
    expect(page.locator("#status")).to_have_attribute("data-state", "online")


def open_room(page, name: str) -> None:
    page.fill("#new-room", name)
    page.click("#new-room-submit")
    expect(page.locator("#room-title")).to_have_text(name)


def post(page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")
    expect(page.locator("#text")).to_have_value("")
