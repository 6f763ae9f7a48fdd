"""The labeling page at a desk and on a phone (issue 14), with formatting shown: what must be visible, no
sideways scroll, and a screenshot of each (tests/screens.py)."""

from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from annotate.labels import DEFAULT_SCHEMA
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.screens import at_both_widths, screenshot_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

PROMPT = "Write a function that adds **two numbers**, with an example."
RESPONSE_A = (
    "Here is one:\n\n```python\ndef add(first_number: int, second_number: int) -> int:\n"
    "    return first_number + second_number  # a long line that must scroll inside its own box on a phone\n```\n\n"
    "- It is **typed**.\n- It is short."
)
RESPONSE_B = "Use `sum([a, b])`.\n\n| input | output |\n| --- | --- |\n| 1, 2 | 3 |"


def test_the_labeling_page_with_formatting_at_both_widths(live_server, browser: Browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(name="Code answers", overlap=1, schema=DEFAULT_SCHEMA)
    ItemFactory(
        project=project, prompt=[{"role": "user", "content": PROMPT}], response_a=RESPONSE_A, response_b=RESPONSE_B
    )

    def check(page: Page) -> None:
        page.wait_for_load_state("load")
        expect(page.locator("#item-card [data-item-id]")).to_be_visible()
        page.get_by_label("Show formatting").check()
        expect(page.get_by_role("region", name="Prompt").locator(".formatted-view strong")).to_have_text("two numbers")
        expect(page.get_by_test_id("formatted-a").locator("pre code")).to_contain_text("def add(")
        expect(page.get_by_test_id("formatted-b").locator("table")).to_be_visible()
        expect(page.get_by_test_id("marking-raw-only")).to_be_visible()
        expect(page.get_by_test_id("response-a")).to_be_hidden()

    shots = at_both_widths(
        browser,
        live_server.url,
        member(project),
        reverse("annotate:label", args=[project.pk]),
        check,
        name="label-formatted",
        folder=screenshot_dir(tmp_path),
    )
    assert all(shot.stat().st_size > 0 for shot in shots)
