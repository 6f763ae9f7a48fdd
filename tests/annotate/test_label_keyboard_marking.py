"""Error spans marked with the keyboard alone (issue 14): Tab to a response, move with the arrow keys, extend
with Shift (Ctrl for a word), press a category key. What is stored must be what a mouse selection of the same
text stores: code points into the stored text, after an emoji and a CRLF as in test_browser_fine.py."""

import json
from typing import Any

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from annotate.labels import DEFAULT_SCHEMA
from annotate.models import Annotation
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.annotate.test_browser_fine import _drag_over
from tests.browser import log_in

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SPANS_ONLY = {**DEFAULT_SCHEMA, "attributes": []}
RESPONSE_A = "Paris is the capital of France. It is also famous for its many cheeses."
RESPONSE_B = "Hello 👋🏽 there!\r\nThe capital of France is Lyon, as everyone knows."
WRONG_GROUNDING_KEY = "4"  # the fourth category of DEFAULT_SCHEMA


def open_item(page: Page, base_url: str) -> tuple[Any, Any]:
    project = ProjectFactory(overlap=1, schema=SPANS_ONLY)
    item = ItemFactory(project=project, response_a=RESPONSE_A, response_b=RESPONSE_B)
    annotator = member(project)
    log_in(page, base_url, annotator)
    page.goto(base_url + reverse("annotate:label", args=[project.pk]))
    page.wait_for_load_state("load")
    expect(page.locator("#item-card [data-item-id]")).to_have_attribute("data-item-id", str(item.pk))
    return item, annotator


def posted_spans(page: Page) -> list[dict[str, Any]]:
    return json.loads(page.locator("input[name=spans_json]").input_value())


def tab_to(page: Page, test_id: str) -> None:
    """Press Tab until the element has focus, as a keyboard user gets there."""
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("(id) => document.activeElement.dataset.testid === id", test_id):
            return
    raise AssertionError(f"Tab never reached {test_id}")


def graphemes_before(page: Page, side: str, needle: str) -> int:
    """How many right-arrow presses reach `needle`: one per character as drawn (an emoji with its skin tone is
    one, and so is the line break the HTML parser made of the CRLF)."""
    return page.evaluate(
        """([side, needle]) => {
          const text = document.querySelector(`#item-card .response-text[data-side="${side}"]`).textContent;
          const before = text.slice(0, text.indexOf(needle));
          return Array.from(new Intl.Segmenter().segment(before)).length;
        }""",
        [side, needle],
    )


def press(page: Page, key: str, times: int) -> None:
    for _ in range(times):
        page.keyboard.press(key)


def test_keyboard_marking_stores_the_span_a_mouse_selection_stores(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    item, annotator = open_item(page, live_server.url)
    live = page.get_by_test_id("span-live")

    # The mouse first: "Lyon", after the emoji and the CRLF, with its category key.
    _drag_over(page, "b", "Lyon")
    page.keyboard.press(WRONG_GROUNDING_KEY)
    by_mouse = posted_spans(page)
    assert [(s["start"], s["end"], s["category"]) for s in by_mouse] == [
        (RESPONSE_B.index("Lyon"), RESPONSE_B.index("Lyon") + 4, "wrong_grounding")
    ]
    page.get_by_test_id("spans-b").get_by_role("button").click()
    assert posted_spans(page) == []

    # Then the keyboard alone: Tab to response B, arrows to "Lyon", Ctrl+Shift+Right takes the word.
    tab_to(page, "response-b")
    press(page, "ArrowRight", graphemes_before(page, "b", "Lyon"))
    page.keyboard.press("Control+Shift+ArrowRight")
    expect(page.locator(".span-popover")).to_be_visible()
    expect(live).to_contain_text("“Lyon” selected in response B")
    page.keyboard.press(WRONG_GROUNDING_KEY)
    expect(page.locator(".span-popover")).to_be_hidden()
    assert posted_spans(page) == by_mouse
    expect(page.locator('[data-testid="response-b"] mark[data-category="wrong_grounding"]')).to_have_text("Lyon")
    expect(live).to_have_text("Marked “Lyon” in response B as Wrong grounding.")
    expect(page.get_by_test_id("response-b")).to_be_focused()

    # Esc cancels a selection: nothing is marked, and the live region says so.
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    expect(page.locator(".span-popover")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator(".span-popover")).to_be_hidden()
    expect(live).to_have_text("Selection cancelled.")
    assert posted_spans(page) == by_mouse

    # Character by character with Shift+Right in response A, then the preference and submit, all by key.
    tab_to(page, "response-a")
    needle = "famous for its many cheeses"
    press(page, "ArrowRight", RESPONSE_A.index(needle))
    press(page, "Shift+ArrowRight", len(needle))
    page.keyboard.press("1")
    expect(page.locator('[data-testid="response-a"] mark[data-category="irrelevant"]')).to_have_text(needle)
    page.keyboard.press("2")
    page.keyboard.press("Control+Enter")
    expect(page.get_by_test_id("queue-empty")).to_be_visible()

    stored = Annotation.objects.get(item=item, annotator=annotator).spans
    assert sorted((s["response"], s["start"], s["end"], s["category"]) for s in stored) == [
        ("a", RESPONSE_A.index(needle), RESPONSE_A.index(needle) + len(needle), "irrelevant"),
        ("b", by_mouse[0]["start"], by_mouse[0]["end"], "wrong_grounding"),
    ]


def test_a_keyboard_selection_stays_inside_its_response(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    open_item(page, live_server.url)
    tab_to(page, "response-a")
    page.keyboard.press("End")
    press(page, "Shift+ArrowLeft", len("cheeses."))
    # Past the end of the text the selection stops at its edge rather than run into the page below.
    press(page, "Shift+ArrowRight", len("cheeses.") + 5)
    expect(page.locator(".span-popover")).to_be_hidden()
    press(page, "Shift+ArrowLeft", len("cheeses."))
    page.keyboard.press("2")
    assert [(s["start"], s["end"], s["category"]) for s in posted_spans(page)] == [
        (len(RESPONSE_A) - len("cheeses."), len(RESPONSE_A), "redundant")
    ]
