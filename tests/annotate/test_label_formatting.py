"""The labeling page's "Show formatting" (issue 14): prompts and responses as sanitised Markdown with code
blocks, an annotator's choice kept by the browser, raw text the default, and error spans marked on the raw text
only. The whole XSS corpus goes through the formatted view too: nothing runs, nothing is injected."""

from html.parser import HTMLParser

import pytest
from django.urls import reverse
from playwright.sync_api import Page, expect

from annotate.labels import DEFAULT_SCHEMA
from annotate.templatetags.concord import formatted
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.annotate.test_browser_fine import _drag_over
from tests.browser import log_in
from tests.security.test_xss_browser import HOOK, INJECTED
from tests.security.xss_payloads import MARKER_PREFIX, PAYLOADS

SPANS_ONLY = {**DEFAULT_SCHEMA, "attributes": []}
PROMPT = "Make this **bold** and explain:\n\n```python\nprint('<hi>')\n```"
RESPONSE_A = "The word **strong** is bold here.\n\n[official docs](https://evil.example/phish)\n\n" + "\n\n".join(
    PAYLOADS
)
RESPONSE_B = "Use this:\n\n```\nfor i in range(3):\n    print(i)\n```\n\nIt prints three numbers."


class Tags(HTMLParser):
    """Every start tag in some HTML, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


TEXT_TAGS = {"p", "br", "strong", "em", "code", "pre", "span", "ul", "ol", "li", "blockquote", "hr", "h1", "h2", "h3"}


def test_the_filter_keeps_no_markup_of_its_own_from_any_payload() -> None:
    for payload in PAYLOADS:
        tags = Tags()
        tags.feed(str(formatted(payload)))
        assert all(tag in TEXT_TAGS and not attrs for tag, attrs in tags.found), (payload, tags.found)


def test_the_filter_writes_out_where_a_link_goes() -> None:
    assert str(formatted("[official docs](https://evil.example/x)")) == (
        "<p><span>official docs</span> (https://evil.example/x)</p>"
    )
    assert str(formatted("![a cat](https://evil.example/cat.png)")) == (
        "<p><span>[image: a cat]</span> (https://evil.example/cat.png)</p>"
    )


def test_the_filter_shows_raw_html_as_text() -> None:
    assert str(formatted("<b>hi</b> & **there**")) == "<p>&lt;b&gt;hi&lt;/b&gt; &amp; <strong>there</strong></p>"


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_formatting_is_an_annotators_choice_and_marking_stays_raw(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    ran: list[str] = []
    page.context.expose_function("__xssReport", lambda marker: ran.append(marker))
    page.context.add_init_script(HOOK)
    page.on("dialog", lambda dialog: (ran.append(f"dialog {dialog.message!r}"), dialog.dismiss()))
    project = ProjectFactory(overlap=1, schema=SPANS_ONLY)
    ItemFactory(
        project=project,
        prompt=[{"role": "user", "content": PROMPT}],
        response_a=RESPONSE_A,
        response_b=RESPONSE_B,
    )
    log_in(page, live_server.url, member(project))
    page.goto(live_server.url + reverse("annotate:label", args=[project.pk]))
    page.wait_for_load_state("load")
    toggle = page.get_by_label("Show formatting")
    conversation = page.get_by_role("region", name="Prompt")

    # Raw text is the default.
    expect(toggle).not_to_be_checked()
    expect(page.get_by_test_id("response-a")).to_be_visible()
    expect(page.get_by_test_id("response-a")).to_contain_text("The word **strong** is bold here.")
    expect(page.get_by_test_id("formatted-a")).to_be_hidden()
    expect(conversation.locator(".formatted-view strong")).to_be_hidden()

    toggle.check()
    expect(conversation.locator(".formatted-view strong")).to_have_text("bold")
    code = conversation.locator(".formatted-view pre code")
    expect(code).to_have_text("print('<hi>')\n")
    assert "monospace" in code.evaluate("(element) => getComputedStyle(element).fontFamily")
    expect(page.get_by_test_id("formatted-b").locator("pre code")).to_contain_text("for i in range(3):")
    formatted_a = page.get_by_test_id("formatted-a")
    expect(formatted_a.locator("strong")).to_have_text("strong")
    expect(formatted_a).to_contain_text("official docs (https://evil.example/phish)")
    expect(formatted_a).to_contain_text(PAYLOADS[1].split("\n")[0])  # an <img onerror>, shown as text
    expect(formatted_a.locator("a, img, iframe, script, svg")).to_have_count(0)
    assert page.evaluate(INJECTED, MARKER_PREFIX) == []

    # Spans are marked on the raw text only: the raw text is gone, a selection in the formatted text offers
    # nothing, and the page says why.
    expect(page.get_by_test_id("response-a")).to_be_hidden()
    expect(page.get_by_test_id("marking-raw-only")).to_be_visible()
    box = page.get_by_test_id("formatted-b").locator("p").last.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 2, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] - 2, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    assert page.evaluate("() => window.getSelection().toString()").strip() != ""
    expect(page.locator(".span-popover")).to_be_hidden()

    # Remembered by this browser.
    page.reload()
    page.wait_for_load_state("load")
    expect(page.get_by_label("Show formatting")).to_be_checked()
    expect(page.get_by_test_id("formatted-a").locator("strong")).to_have_text("strong")
    expect(page.get_by_test_id("response-a")).to_be_hidden()

    # Back to raw text, where marking works as before.
    page.get_by_label("Show formatting").uncheck()
    expect(page.get_by_test_id("marking-raw-only")).to_be_hidden()
    _drag_over(page, "b", "three numbers")
    page.keyboard.press("1")
    expect(page.locator('[data-testid="response-b"] mark[data-category="irrelevant"]')).to_have_text("three numbers")
    assert ran == []
