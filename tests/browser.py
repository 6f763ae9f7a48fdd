"""Fixtures for browser tests: Debian's Chromium driven by Playwright against pytest-django's live server.

Registered for every test module through `pytest_plugins` in tests/conftest.py; a module that uses them is
marked `browser` and needs `django_db(transaction=True)` (the live server runs in another thread).

Every wait on the browser (an action, a navigation, an `expect`) waits for its event up to tests.waits'
HANG_GUARD_MS, set here once rather than Playwright's 5 s and 30 s, which a busy machine can exceed.
"""

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.annotate.factories import DEFAULT_PASSWORD
from tests.waits import HANG_GUARD_MS

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def allow_orm_beside_playwright() -> Iterator[None]:
    """Playwright's sync API keeps an event loop running in this thread, and Django's ORM then refuses
    synchronous queries (SynchronousOnlyOperation). The queries here really are synchronous, so say so; it
    must outlive the browser and each test's database flush."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="session")
def browser(allow_orm_beside_playwright: None) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (`make test` does).", pytrace=False)
    expect.set_options(timeout=HANG_GUARD_MS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, timeout=HANG_GUARD_MS
        )
        yield browser
        browser.close()


@contextlib.contextmanager
def fresh_page(browser: Browser) -> Iterator[Page]:
    """A page in a context of its own (cookies, storage), closed with it; its waits are hang guards."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(HANG_GUARD_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    with fresh_page(browser) as page:
        yield page


def log_in(page: Page, base_url: str, user) -> None:  # type: ignore[no-untyped-def]
    """Log in through the login form, as a person would."""
    page.goto(base_url + reverse("login"))
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your projects")).to_be_visible()
