"""The project list in a browser at a desk's width and a phone's (issue 14, item 7): a card per project with its
item counts, progress, agreement and active model (the last two swapped in from training's fragment)."""

from pathlib import Path

import pytest
from django.urls import reverse
from django.utils import timezone
from playwright.sync_api import Browser, Page, expect

from annotate.models import Item, Membership, Role
from curation.models import DatasetVersion, ProjectQuality
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.screens import at_both_widths, screenshot_dir
from training.models import RewardModel, TrainingRun

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
]


def projects_with_figures():  # type: ignore[no-untyped-def]
    helpful = ProjectFactory(name="Helpfulness of everyday answers, second round", overlap=2)
    harmless = ProjectFactory(name="Harmlessness", overlap=3)
    for n in range(8):
        item = ItemFactory(project=helpful)
        if n < 6:
            Item.objects.filter(pk=item.pk).update(annotation_count=2, human_count=2)
    ItemFactory(project=harmless)
    report = {"agreement": {"alpha_strength": 0.6234, "pairwise": 0.81, "items": 6}}
    ProjectQuality.objects.create(
        project=helpful, requested_at=timezone.now(), report=report, computed_at=timezone.now()
    )
    version = DatasetVersion.objects.create(name="v1")
    run = TrainingRun.objects.create(project=helpful, dataset_version=version, status=TrainingRun.Status.SUCCEEDED)
    RewardModel.objects.create(
        project=helpful,
        run=run,
        path="/models/x",
        model_card={"metrics": {"heldout": {"accuracy": 0.734}}},
        is_active=True,
    )
    return helpful, harmless, run


def test_the_project_list_shows_a_card_per_project_at_both_widths(
    browser: Browser, live_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    helpful, harmless, run = projects_with_figures()
    user = member(helpful, Role.ADMIN)
    Membership.objects.create(project=harmless, user=user, role=Role.ANNOTATOR)

    def check(page: Page) -> None:
        cards = page.get_by_test_id("project-card")
        expect(cards).to_have_count(2)
        first = cards.filter(has_text="Helpfulness")
        expect(first.get_by_test_id("project-card-counts")).to_contain_text("8 items · 6 with 2 annotations (75%)")
        expect(first.get_by_role("progressbar")).to_have_attribute("aria-valuenow", "75")
        expect(first.get_by_test_id("agreement")).to_contain_text("α 0.62 · 0.81 pairwise")
        expect(first.get_by_test_id("active-model")).to_contain_text(f"run #{run.pk} · 0.73 held-out accuracy")
        second = cards.filter(has_text="Harmlessness")
        expect(second.get_by_test_id("project-card-counts")).to_contain_text("1 item · 0 with 3 annotations (0%)")
        expect(second.get_by_test_id("agreement")).to_have_count(0)  # an annotator there

    url = reverse("annotate:project_list")
    at_both_widths(browser, live_server.url, user, url, check, name="projects", folder=screenshot_dir(tmp_path))
