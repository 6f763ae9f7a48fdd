"""The labeling page at a desk and on a phone (issue 14), with formatting shown: what must be visible, no
sideways scroll, and a screenshot of each (tests/screens.py)."""

from collections.abc import Callable
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


def assert_label_page_shots(  # type: ignore[no-untyped-def]
    browser: Browser, url: str, project, check: Callable[[Page], None], *, name: str, tmp_path: Path
) -> None:
    """The project's labeling page, as a member sees it, checked and shot at both widths."""
    shots = at_both_widths(
        browser,
        url,
        member(project),
        reverse("annotate:label", args=[project.pk]),
        check,
        name=name,
        folder=screenshot_dir(tmp_path),
    )
    assert all(shot.stat().st_size > 0 for shot in shots)


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

    assert_label_page_shots(browser, live_server.url, project, check, name="label-formatted", tmp_path=tmp_path)


QUESTION = "What is the capital of Australia, and why was it chosen over Sydney and Melbourne?"
ANSWER_A = (
    "The capital of Australia is Canberra. It was chosen as a compromise: Sydney and Melbourne, the two largest "
    "cities, both wanted to be the capital, so in 1908 a site between them was picked and a new city was planned."
)
ANSWER_B = (
    "Sydney is the capital of Australia, since it is the largest city and home to the Opera House. Melbourne was "
    "the capital until 1927."
)


def test_the_labeling_page_with_every_kind_of_label_at_both_widths(
    live_server, browser: Browser, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """The README's picture: a preference, HelpSteer2 ratings, a Fine-Grained RLHF error span and missing
    information, given with the keyboard and the mouse, before the submit."""
    from tests.annotate.test_browser_fine import _drag_over

    project = ProjectFactory(name="Everyday questions", overlap=1, schema=DEFAULT_SCHEMA)
    ItemFactory(
        project=project, prompt=[{"role": "user", "content": QUESTION}], response_a=ANSWER_A, response_b=ANSWER_B
    )

    def check(page: Page) -> None:
        page.wait_for_load_state("load")
        expect(page.locator("#item-card [data-item-id]")).to_be_visible()
        page.keyboard.press("2")  # A is better
        expect(page.locator('.strength-option[data-key="2"] input')).to_be_checked()
        page.keyboard.press("r")
        for value in "44422" + "10311":  # A: helpful and correct; B: neither
            page.keyboard.press(value)
        _drag_over(page, "b", "Sydney is the capital of Australia")
        page.keyboard.press("4")
        expect(page.get_by_test_id("spans-b").locator(".span-item")).to_have_count(1)
        page.locator('.response[data-side="b"]').get_by_label("Missing major").check()
        page.keyboard.press("j")
        page.keyboard.type("B names the wrong capital and does not say why Canberra was chosen.")
        page.locator("#item-card").scroll_into_view_if_needed()

    assert_label_page_shots(browser, live_server.url, project, check, name="label", tmp_path=tmp_path)
