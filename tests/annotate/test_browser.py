"""The labeling page in a real browser: keyboard-only labeling through htmx, and untrusted text shown inert.

Runs Debian's Chromium (`make test` installs it) against pytest-django's live server and the real PostgreSQL.
"""

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from annotate.models import Annotation
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.browser import log_in

XSS_RESPONSE = '<script>window.__xss = 1</script><img src=x onerror="window.__xss=2">'

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _label_with_keyboard(page: Page, *, key: str, justification: str) -> str:
    """Label the item on screen with keys only; returns its id once the next card has replaced it."""
    card = page.locator("#item-card [data-item-id]")
    item_id = card.get_attribute("data-item-id")
    assert item_id is not None
    done = int(page.get_by_test_id("done").inner_text())
    # Otherwise the digit would be typed into the box instead of choosing a strength.
    expect(
        page.locator("#justification"), "a new item card must not start with the justification focused"
    ).not_to_be_focused()
    page.keyboard.press(key)
    expect(page.locator(f'.strength-option[data-key="{key}"] input')).to_be_checked()
    page.keyboard.press("j")
    expect(page.locator("#justification")).to_be_focused()
    # Typed like a person, so the page's timer (tenths of a second) records a non-zero time.
    page.keyboard.type(justification, delay=15)
    page.keyboard.press("Control+Enter")
    expect(page.get_by_test_id("done")).to_have_text(str(done + 1))
    expect(card).not_to_have_attribute("data-item-id", item_id)
    return item_id


def test_annotator_labels_three_items_with_the_keyboard_alone(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1, guidelines="Prefer the **more helpful** response.")
    ItemFactory.create_batch(5, project=project)
    annotator = member(project)
    log_in(page, live_server.url, annotator)

    page.goto(live_server.url + reverse("annotate:project_queue", args=[project.pk]))
    page.get_by_role("link", name="Start labeling").click()
    page.wait_for_url("**/label/")
    # The shortcuts come from deferred scripts, which have run once the load event fires.
    page.wait_for_load_state("load")
    # Survives only if every later card arrives by htmx swap rather than a page load.
    page.evaluate("window.__marker = 1")

    steps = [
        ("1", -3, "A is clearly more helpful."),
        ("4", 0, "Both answers are equally good."),
        ("7", 3, "B is right and A is not."),
    ]
    expected = {}
    for key, strength, justification in steps:
        item_id = _label_with_keyboard(page, key=key, justification=justification)
        expected[int(item_id)] = (strength, justification)
    assert page.evaluate("window.__marker") == 1

    annotations = list(Annotation.objects.filter(annotator=annotator))
    assert len(annotations) == 3
    assert {a.item_id: (a.strength, a.justification) for a in annotations} == expected
    assert all(a.seconds_spent > 0 for a in annotations)


def test_untrusted_text_is_shown_literally_and_never_runs(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    ItemFactory(
        project=project,
        prompt=[{"role": "user", "content": "<b>Bold?</b> <script>window.__xss = 3</script>"}],
        response_a=XSS_RESPONSE,
    )
    annotator = member(project)
    log_in(page, live_server.url, annotator)

    page.goto(live_server.url + reverse("annotate:label", args=[project.pk]))
    expect(page.get_by_test_id("response-a")).to_have_text(XSS_RESPONSE)
    expect(page.get_by_label("Prompt")).to_contain_text("<b>Bold?</b> <script>window.__xss = 3</script>")
    assert "<script>" in page.locator("body").inner_text()
    assert page.locator("#item-card script, #item-card img, #item-card b").count() == 0
    assert page.evaluate("typeof window.__xss") == "undefined"
