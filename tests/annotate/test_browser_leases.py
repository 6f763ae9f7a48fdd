"""The labeling page in a real browser, where leases are concerned (issue 12, items 6 and 9): a visit from another
site takes no item until the annotator asks, and a submit the server refuses (the item gone to others, the
annotator paused) is shown in place, saying why.

Runs Debian's Chromium against pytest-django's live server and the real PostgreSQL, as test_browser.py does.
"""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Page, expect

from annotate.models import Annotation, Assignment, Membership
from annotate.services.labeling import assignment_next
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

ELSEWHERE = "http://elsewhere.example/"
DRAFT_KEYS = "Object.keys(localStorage).filter(key => key.startsWith('concord-draft:'))"


def test_a_link_from_another_site_takes_no_item_until_the_annotator_asks(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    item = ItemFactory(project=project)
    annotator = member(project)
    log_in(page, live_server.url, annotator)
    label_url = live_server.url + reverse("annotate:label", args=[project.pk])
    # Another site's page (served by Playwright, never by the network) linking to the labeling page.
    page.route(ELSEWHERE, lambda route: route.fulfill(content_type="text/html", body=f'<a href="{label_url}">go</a>'))
    page.goto(ELSEWHERE)
    page.get_by_role("link", name="go").click()
    page.wait_for_url(label_url)
    # Nothing more is sent once the page has loaded: no request in flight for a while.
    page.wait_for_load_state("networkidle")
    expect(page.get_by_test_id("queue-next")).to_be_visible()
    assert not Assignment.objects.exists(), "a cross-site visit took a lease"

    page.get_by_role("button", name="Take the next item").click()
    expect(page.locator("#item-card [data-item-id]")).to_have_attribute("data-item-id", str(item.pk))
    assert list(Assignment.objects.values_list("annotator", "status")) == [(annotator.pk, Assignment.Status.LEASED)]


def _open_label_page(page: Page, base_url: str, project_id: int) -> str:
    page.goto(base_url + reverse("annotate:label", args=[project_id]))
    page.wait_for_load_state("load")
    item_id = page.locator("#item-card [data-item-id]").get_attribute("data-item-id")
    assert item_id is not None
    return item_id


def test_a_submit_after_the_item_went_to_someone_else_says_so_and_offers_the_next(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    first, second = ItemFactory.create_batch(2, project=project)
    annotator, quicker = member(project), member(project)
    log_in(page, live_server.url, annotator)
    assert _open_label_page(page, live_server.url, project.pk) == str(first.pk)
    # The lease runs out and another annotator is handed the item.
    Assignment.objects.filter(annotator=annotator).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert assignment_next(project=project, annotator=quicker) == first

    page.keyboard.press("1")
    page.keyboard.press("Enter")
    notice = page.get_by_test_id("notice")
    expect(notice).to_have_text(
        f"Not saved: Your time on item {first.number} ran out and it has gone to other annotators."
    )
    expect(notice).to_contain_class("warning")
    assert page.evaluate(DRAFT_KEYS) == [], "the refused item's draft was kept"
    assert not Annotation.objects.exists()

    page.get_by_role("button", name="Take the next item").click()
    expect(page.locator("#item-card [data-item-id]")).to_have_attribute("data-item-id", str(second.pk))


def test_a_submit_from_a_paused_annotator_says_so(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    ItemFactory(project=project)
    annotator = member(project)
    log_in(page, live_server.url, annotator)
    _open_label_page(page, live_server.url, project.pk)
    Membership.objects.filter(user=annotator).update(is_paused=True)

    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("notice")).to_have_text("Not saved: A curator has paused your labeling in this project.")
    expect(page.get_by_test_id("paused")).to_be_visible()
    assert not Annotation.objects.exists()
