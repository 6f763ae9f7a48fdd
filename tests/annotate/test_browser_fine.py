"""Fine-grained labeling in a real browser: keyboard preference and ratings, error spans marked by dragging the
mouse over the text (one after an emoji, so the UTF-16 to code point conversion counts), missing information,
and what reaches the database.

Runs Debian's Chromium against pytest-django's live server and the real PostgreSQL, as test_browser.py does.
"""

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from annotate.labels import DEFAULT_SCHEMA
from annotate.models import Annotation
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.browser import log_in

RESPONSE_A = "Paris is the capital of France. It is also famous for its many cheeses."
# A waving hand with a skin tone: two code points, four UTF-16 units; and a CRLF, which the HTML parser would
# turn into LF, both before the span to mark.
RESPONSE_B = "Hello 👋🏽 there!\r\nThe capital of France is Lyon, as everyone knows."
RATINGS_A = {"helpfulness": 4, "correctness": 3, "coherence": 4, "complexity": 1, "verbosity": 2}
RATINGS_B = {"helpfulness": 1, "correctness": 0, "coherence": 3, "complexity": 1, "verbosity": 2}
COLORS = {c["name"]: c["color"] for c in DEFAULT_SCHEMA["spans"]["categories"]}

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


# Where `needle` is drawn inside a response: the middle of the left edge of its first character and of the right
# edge of its last, found in whichever text node holds it now (marks split the text into several).
NEEDLE_EDGES = """([side, needle]) => {
  const box = document.querySelector(`#item-card .response-text[data-side="${side}"]`);
  const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const at = node.data.indexOf(needle);
    if (at < 0) continue;
    const range = document.createRange();
    range.setStart(node, at);
    range.setEnd(node, at + needle.length);
    const rects = Array.from(range.getClientRects()).filter(r => r.width > 0);
    const first = rects[0], last = rects[rects.length - 1];
    return [first.left, first.top + first.height / 2, last.right, last.top + last.height / 2];
  }
  return null;
}"""


def _drag_over(page: Page, side: str, needle: str) -> None:
    """Select `needle` in a response the way a person does: press, drag, release."""
    page.get_by_test_id(f"response-{side}").scroll_into_view_if_needed()
    edges = page.evaluate(NEEDLE_EDGES, [side, needle])
    assert edges is not None, f"{needle!r} is not shown in response {side}"
    left, top, right, bottom = edges
    page.mouse.move(left + 1, top)
    page.mouse.down()
    page.mouse.move((left + right) / 2, (top + bottom) / 2, steps=4)
    page.mouse.move(right - 1, bottom, steps=4)
    page.mouse.up()
    expect(page.locator(".span-popover")).to_be_visible()


def _rgb(color: str) -> str:
    return f"rgb({int(color[1:3], 16)}, {int(color[3:5], 16)}, {int(color[5:7], 16)})"


def _rate_with_keys(page: Page) -> None:
    """r jumps to the first unrated row; each digit rates that row and moves on to the next."""
    page.keyboard.press("r")
    expect(page.locator('input[name="rating-a-helpfulness"][value="0"]')).to_be_focused()
    for value in [*RATINGS_A.values(), *RATINGS_B.values()]:
        page.keyboard.press(str(value))
    for side, expected in (("a", RATINGS_A), ("b", RATINGS_B)):
        for name, value in expected.items():
            expect(page.locator(f'input[name="rating-{side}-{name}"][value="{value}"]')).to_be_checked()


def _mark_spans(page: Page) -> None:
    spans_a, spans_b = page.get_by_test_id("spans-a"), page.get_by_test_id("spans-b")
    # Response A, chosen with the mouse.
    _drag_over(page, "a", "famous for its many cheeses")
    page.locator(".span-popover .span-category", has_text="Irrelevant").click()
    expect(page.locator(".span-popover")).to_be_hidden()
    mark = page.locator('[data-testid="response-a"] mark.span-mark[data-category="irrelevant"]')
    expect(mark).to_have_text("famous for its many cheeses")
    expect(mark).to_have_css("border-bottom-color", _rgb(COLORS["irrelevant"]))
    expect(spans_a.locator(".span-item")).to_have_count(1)
    expect(spans_a).to_contain_text("famous for its many cheeses")

    # An extra one, then removed with its ×.
    _drag_over(page, "a", "capital of France")
    page.locator(".span-popover .span-category", has_text="Redundant").click()
    expect(spans_a.locator(".span-item")).to_have_count(2)
    expect(page.locator('[data-testid="response-a"] mark[data-category="redundant"]')).to_have_count(1)
    spans_a.locator(".span-item", has_text="Redundant").get_by_role("button").click()
    expect(spans_a.locator(".span-item")).to_have_count(1)
    expect(page.locator('[data-testid="response-a"] mark[data-category="redundant"]')).to_have_count(0)
    expect(page.get_by_test_id("response-a")).to_have_text(RESPONSE_A)

    # A selection over a marked span is refused: spans do not overlap.
    _drag_over(page, "a", "its many")
    expect(page.locator(".span-popover-note")).to_contain_text("overlaps")
    expect(page.locator(".span-popover .span-category").first).to_be_disabled()
    page.keyboard.press("Escape")
    expect(page.locator(".span-popover")).to_be_hidden()

    # Response B, after the emoji and the CRLF; the category picked with its key (4: wrong grounding).
    _drag_over(page, "b", "Lyon")
    page.keyboard.press("4")
    mark_b = page.locator('[data-testid="response-b"] mark.span-mark[data-category="wrong_grounding"]')
    expect(mark_b).to_have_text("Lyon")
    expect(mark_b).to_have_css("border-bottom-color", _rgb(COLORS["wrong_grounding"]))
    expect(spans_b.locator(".span-item")).to_have_count(1)


def test_annotator_labels_ratings_spans_and_missing_information(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1, schema=DEFAULT_SCHEMA)
    item = ItemFactory(project=project, response_a=RESPONSE_A, response_b=RESPONSE_B)
    annotator = member(project)
    log_in(page, live_server.url, annotator)
    page.goto(live_server.url + reverse("annotate:label", args=[project.pk]))
    # The shortcuts come from deferred scripts, which have run once the load event fires.
    page.wait_for_load_state("load")
    # The item is taken by a POST the page sends as it loads (a GET takes no lease), then swapped in.
    expect(page.locator("#item-card [data-item-id]")).to_have_attribute("data-item-id", str(item.pk))

    page.keyboard.press("2")
    expect(page.locator('.strength-option[data-key="2"] input')).to_be_checked()
    _rate_with_keys(page)
    _mark_spans(page)
    page.locator('.response[data-side="b"]').get_by_label("Missing major").check()
    # Still a preference key once focus has left the rating rows (the checkbox is not a text box).
    page.keyboard.press("3")
    expect(page.locator('.strength-option[data-key="3"] input')).to_be_checked()
    page.keyboard.press("j")
    page.keyboard.type("B puts the capital in Lyon.", delay=5)
    page.keyboard.press("Control+Enter")
    expect(page.get_by_test_id("queue-empty")).to_be_visible()

    annotation = Annotation.objects.get(item=item, annotator=annotator)
    assert annotation.strength == -1
    assert annotation.justification == "B puts the capital in Lyon."
    assert annotation.ratings == {"a": RATINGS_A, "b": RATINGS_B}
    a_span, b_span = annotation.spans
    assert (a_span["response"], a_span["category"]) == ("a", "irrelevant")
    assert RESPONSE_A[a_span["start"] : a_span["end"]] == a_span["text"] == "famous for its many cheeses"
    assert (b_span["response"], b_span["category"]) == ("b", "wrong_grounding")
    assert RESPONSE_B[b_span["start"] : b_span["end"]] == b_span["text"] == "Lyon"
    assert b_span["start"] == RESPONSE_B.index("Lyon"), "code points, not UTF-16 units or LF-normalised text"
    assert annotation.missing == [{"response": "b", "category": "missing_major"}]
