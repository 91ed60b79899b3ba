from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.browser.chromium import VIEWPORT, executable, launch

# What the pages wait for is mostly a run's progress: a real program's start and length, which
# on a loaded two-core machine running the suite in parallel outlast expect's default of 5 s.
# A longer wait changes nothing for a page that works; it only fails later one that does not.
expect.set_options(timeout=30_000)


# Module scope, not session: Playwright's sync API runs an event loop in this thread while it
# is open, and the asyncio tests that follow need the thread to themselves.
@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if executable() is None:
        pytest.fail("Chromium is missing: `make test` installs it (scripts/browser)")
    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert errors == [], f"the page threw: {errors}"
