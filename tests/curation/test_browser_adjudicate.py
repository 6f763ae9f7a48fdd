"""Adjudication in a real browser: a curator settles a split item from the review queue.

Runs Debian's Chromium against pytest-django's live server and the real PostgreSQL, like
tests/annotate/test_browser.py.
"""

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from annotate.models import Role
from curation.models import Adjudication
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


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

    log_in(page, live_server.url, curator)

    page.goto(live_server.url + reverse("annotate:project_queue", args=[project.pk]))
    page.get_by_role("link", name="Review").click()
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    rows = page.locator("[data-testid=review-queue] tbody tr[data-item-id]")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Sign split")

    page.get_by_role("link", name=f"Item {split.number}").click()
    expect(page.get_by_role("heading", name=f"Adjudicate item {split.number}")).to_be_visible()
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
