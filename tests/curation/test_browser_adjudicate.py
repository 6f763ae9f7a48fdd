"""Adjudication in a real browser: a curator settles a split item from the review queue.

Runs Debian's Chromium against pytest-django's live server and the real PostgreSQL, like
tests/annotate/test_browser.py.
"""

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect, sync_playwright

from annotate.models import Role
from curation.models import Adjudication
from tests.annotate.factories import DEFAULT_PASSWORD, AnnotationFactory, ItemFactory, ProjectFactory, member

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu"]

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def allow_orm_beside_playwright() -> Iterator[None]:
    """Playwright's sync API runs an event loop in this thread, which makes Django refuse synchronous
    queries; these really are synchronous, so allow them for this module only."""
    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    yield
    if previous is None:
        del os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"]
    else:
        os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture(scope="module")
def browser(allow_orm_beside_playwright: None) -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (`make test` does).", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    yield page
    context.close()


def test_a_curator_settles_a_split_item_and_it_leaves_the_queue(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=3)
    annotators = [member(project) for _ in range(3)]
    split = ItemFactory(project=project, response_a="A <b>bold</b> claim.")
    agreed = ItemFactory(project=project)
    for annotator, strength in zip(annotators, [-2, 1, 2], strict=True):
        AnnotationFactory(item=split, annotator=annotator, strength=strength, justification=f"Said {strength}.")
    for annotator in annotators:
        AnnotationFactory(item=agreed, annotator=annotator, strength=-1)
    curator = member(project, Role.CURATOR)

    page.goto(live_server.url + reverse("login"))
    page.get_by_label("Username").fill(curator.username)
    page.get_by_label("Password").fill(DEFAULT_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your projects")).to_be_visible()

    page.goto(live_server.url + reverse("annotate:project_queue", args=[project.pk]))
    page.get_by_role("link", name="Review").click()
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    rows = page.locator("[data-testid=review-queue] tbody tr[data-item-id]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Sign split")

    page.get_by_role("link", name=f"Item {split.pk}").click()
    expect(page.get_by_role("heading", name=f"Adjudicate item {split.pk}")).to_be_visible()
    expect(page.get_by_test_id("annotations").locator("article")).to_have_count(3)
    # Untrusted text stays text.
    expect(page.get_by_test_id("response-a")).to_have_text("A <b>bold</b> claim.")

    page.get_by_role("radio", name="Final label set").check()
    page.get_by_role("combobox", name="Final label").select_option("2")
    page.get_by_label("Reason").fill("Two of three prefer B, and B cites its source.")
    page.get_by_role("button", name="Record decision").click()

    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    expect(page.get_by_test_id("queue-empty")).to_be_visible()
    decision = Adjudication.objects.get(item=split)
    assert (decision.decision, decision.strength, decision.curator_id) == ("label", 2, curator.pk)
    assert decision.reason == "Two of three prefer B, and B cites its source."
