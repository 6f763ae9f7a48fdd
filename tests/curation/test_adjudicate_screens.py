"""The adjudication page at a desk (1440 px) and on a phone (390 px), in Chromium: the decision form in view beside
the annotations at the desk, one tap away on the phone, final ratings as button rows, nothing scrolling sideways;
and in use: a refused decision moves focus to the error summary, a recorded one opens the next item."""

import pytest
from django.urls import reverse
from playwright.sync_api import Locator, Page, expect

from annotate.labels import DEFAULT_SCHEMA
from annotate.models import Role
from curation.models import Adjudication
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.browser import log_in
from tests.screens import at_both_widths, screenshot_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

RATED_SCHEMA = {**DEFAULT_SCHEMA, "spans": {"enabled": False, "categories": [], "missing": []}}
LONG = "A long answer that goes on. " * 40


def disputed_items(count: int = 2):  # type: ignore[no-untyped-def]
    """Items three annotators split on, with justifications and ratings that spread: a long page to decide on."""
    project = ProjectFactory(overlap=3, schema=RATED_SCHEMA)
    annotators = [member(project) for _ in range(3)]
    items = [ItemFactory(project=project, response_a=LONG, response_b=LONG) for _ in range(count)]
    for item in items:
        for annotator, strength, helpfulness in zip(annotators, [-2, 1, 3], [0, 2, 4], strict=True):
            AnnotationFactory(
                item=item,
                annotator=annotator,
                strength=strength,
                justification=f"I would say {strength}, for reasons. " * 5,
                ratings={"a": {"helpfulness": helpfulness, "correctness": 2}, "b": {"helpfulness": 4 - helpfulness}},
            )
    return project, items, member(project, Role.CURATOR)


def fully_in_view(page: Page, locator: Locator) -> bool:
    box = locator.bounding_box()
    height = page.viewport_size["height"] if page.viewport_size else 0
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= height


def test_the_decision_form_is_in_view_at_a_desk_and_one_tap_away_on_a_phone(live_server, browser, tmp_path) -> None:  # type: ignore[no-untyped-def]
    project, items, curator = disputed_items()

    def check(page: Page) -> None:
        form = page.get_by_test_id("decision-form")
        record = page.get_by_role("button", name="Record decision")
        expect(form.get_by_role("radiogroup", name="Helpfulness of A")).to_be_visible()
        expect(form.get_by_role("radio", name="Final label set")).to_be_visible()
        if page.viewport_size and page.viewport_size["width"] >= 1440:
            # Beside the annotations, whole, without scrolling; and still there once they are scrolled through.
            assert fully_in_view(page, record)
            assert fully_in_view(page, form.get_by_role("heading", name="Decide"))
            page.get_by_test_id("history").scroll_into_view_if_needed()
            assert page.evaluate("window.scrollY") > 0
            assert fully_in_view(page, record)
            page.evaluate("window.scrollTo(0, 0)")
        else:
            # Under the annotations, and a link at the top jumps there.
            assert not fully_in_view(page, record)
            page.get_by_role("link", name="Decide ↓").click()
            expect(form.get_by_role("heading", name="Decide")).to_be_in_viewport()

    url = reverse("curation:adjudicate", args=[project.pk, items[0].pk])
    at_both_widths(browser, live_server.url, curator, url, check, name="adjudicate", folder=screenshot_dir(tmp_path))


def test_a_refused_decision_focuses_the_summary_and_a_recorded_one_opens_the_next_item(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project, items, curator = disputed_items()
    log_in(page, live_server.url, curator)
    page.goto(live_server.url + reverse("curation:review_queue", args=[project.pk]))
    page.get_by_role("link", name=f"Item {items[0].number}", exact=True).click()

    page.get_by_role("radio", name="Final label set").check()
    page.get_by_role("radiogroup", name="Helpfulness of B").get_by_text("3", exact=True).click()
    page.get_by_role("radiogroup", name="Correctness of A").get_by_text("1", exact=True).click()
    # Clicked again, a rating is cleared.
    page.get_by_role("radiogroup", name="Correctness of A").get_by_text("1", exact=True).click()
    expect(page.get_by_role("radiogroup", name="Correctness of A").get_by_role("radio", checked=True)).to_have_count(0)
    page.get_by_role("button", name="Record decision").click()

    summary = page.get_by_test_id("errors")
    expect(summary).to_be_focused()
    expect(summary).to_contain_text("Final label: choose the final label")
    expect(summary).to_contain_text("Reason: say why")
    # What was chosen stays chosen.
    expect(page.get_by_role("radiogroup", name="Helpfulness of B").get_by_role("radio", name="3")).to_be_checked()

    page.get_by_role("combobox", name="Final label").select_option("1")
    page.get_by_label("Reason").fill("Two of three prefer B.")
    page.get_by_role("button", name="Record decision").click()

    expect(page.get_by_role("heading", name=f"Adjudicate item {items[1].number}")).to_be_visible()
    expect(page.get_by_test_id("decided")).to_contain_text(f"item {items[0].number}")
    decision = Adjudication.objects.get(item=items[0])
    assert (decision.strength, decision.ratings) == (1, {"b": {"helpfulness": 3}})
    page.get_by_test_id("decided").get_by_role("link").click()
    expect(page.get_by_role("heading", name=f"Adjudicate item {items[0].number}")).to_be_visible()
    expect(page.get_by_test_id("history")).to_contain_text("Two of three prefer B.")
