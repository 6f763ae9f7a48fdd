"""The items list and the item page in a browser at a desk's width and a phone's (issue 14, items 1 and 2): a search
and a filter applied, sortable columns, the bulk actions, the rows' prompts; the item page's way back to the list and
on to the next item, its decision history, model scores, synergy decision and the gold form with nothing ticked."""

from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from annotate.models import Role
from curation.services.adjudication import adjudication_record
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.screens import at_both_widths, screenshot_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

QUESTIONS = [
    "How do I keep basil alive on a north-facing windowsill through the winter?",
    "Write a short, friendly reminder to a neighbour about the shared bins being collected on Thursday.",
    "Which is better for a beginner's first sourdough: a 70% or an 80% hydration dough, and why?",
    "Explain what a mortgage offset account is to someone who has never owned a house.",
]


def a_project():  # type: ignore[no-untyped-def]
    project = ProjectFactory(name="Everyday questions", overlap=2)
    items = [
        ItemFactory(
            project=project,
            prompt=[{"role": "user", "content": question}],
            response_a=f"A careful answer: {question[:40]}…",
            response_b=f"A quick answer: {question[:40]}…",
            source="hh-rlhf/helpful-base" if n % 2 else "ultrafeedback",
        )
        for n, question in enumerate(QUESTIONS)
    ]
    for item, strengths in zip(items, [(2, 3), (-2, 3), (1,), ()], strict=True):
        for strength in strengths:
            AnnotationFactory(item=item, strength=strength)
    return project, items


def scored_and_decided(project, item) -> None:  # type: ignore[no-untyped-def]
    """The active model's scores of the item, and a campaign round's decision on it."""
    from tests.training.conftest import frozen_version
    from tests.training.test_campaign_pages import decide, decided_round, make_campaign
    from tests.training.test_runs import make_model, make_run
    from training.models import ItemScore

    model = make_model(make_run(project, frozen_version(project, count=2), status="succeeded"), is_active=True)
    ItemScore.objects.create(
        item=item, reward_model=model, reward_a=-0.4, reward_b=1.05, margin=1.45, probability_b=0.81, ensemble_std=0.3
    )
    decide(decided_round(make_campaign(project, name="spring")), item, "uncertain", 0.4, spread=0.9)


def test_the_items_list_with_a_search_and_a_filter_at_both_widths(
    browser: Browser, live_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    project, _ = a_project()
    curator = member(project, Role.CURATOR)
    url = reverse("annotate:item_list", args=[project.pk]) + "?q=answer&source=ultrafeedback&sort=-annotations"

    def check(page: Page) -> None:
        expect(page.get_by_role("heading", name="Items", exact=True)).to_be_visible()
        expect(page.get_by_label("Search prompts, responses, source or number")).to_have_value("answer")
        expect(page.get_by_label("Source", exact=True)).to_have_value("ultrafeedback")
        table = page.get_by_test_id("item-table")
        expect(table.locator("tbody tr")).to_have_count(2)
        expect(table.get_by_text(QUESTIONS[0])).to_be_visible()
        expect(table.get_by_text(QUESTIONS[2])).to_be_visible()
        expect(table.get_by_text("agreed")).to_be_visible()
        expect(table.locator('th[aria-sort="descending"]')).to_contain_text("Annotations")
        expect(page.get_by_test_id("bulk-actions").get_by_role("button", name="Apply")).to_be_visible()
        page.get_by_label("Select all on this page").check()
        for box in table.locator("tbody input.pick").all():
            expect(box).to_be_checked()

    at_both_widths(browser, live_server.url, curator, url, check, name="items", folder=screenshot_dir(tmp_path))


def test_the_item_page_at_both_widths(browser: Browser, live_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    project, items = a_project()
    curator = member(project, Role.CURATOR, username="casey")
    adjudication_record(item=items[1], curator=curator, decision="more", reason="A split: ask two more people", more=2)
    scored_and_decided(project, items[1])
    query = "?q=answer&gold=0"
    url = reverse("annotate:item_detail", args=[project.pk, items[1].pk]) + query

    def check(page: Page) -> None:
        expect(page.get_by_role("heading", name=f"Item {items[1].number}")).to_be_visible()
        steps = page.get_by_test_id("item-steps")
        expect(steps.get_by_role("link", name="Back to the list")).to_have_attribute(
            "href", reverse("annotate:item_list", args=[project.pk]) + query
        )
        expect(steps.get_by_role("link", name="Next item")).to_have_attribute(
            "href", reverse("annotate:item_detail", args=[project.pk, items[2].pk]) + query
        )
        expect(steps.get_by_role("link", name="Previous item")).to_be_visible()
        expect(page.get_by_test_id("adjudicate-link")).to_be_visible()
        expect(page.get_by_test_id("decision-history")).to_contain_text("A split: ask two more people")
        expect(page.get_by_test_id("model-scores")).to_contain_text("Margin (B − A)")
        expect(page.get_by_test_id("model-scores")).to_contain_text("0.81")
        expect(page.get_by_test_id("synergy-decision")).to_contain_text("spring, round 1")
        gold = page.get_by_test_id("gold-form")
        expect(gold.get_by_role("radio")).to_have_count(3)
        for radio in gold.get_by_role("radio").all():
            expect(radio).not_to_be_checked()

    at_both_widths(browser, live_server.url, curator, url, check, name="item", folder=screenshot_dir(tmp_path))
