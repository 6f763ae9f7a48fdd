"""The project list: a card per project with its item counts and progress, in a fixed number of queries however
many projects; big projects from their cached counts; agreement and the active model from training's fragment."""

import time

import pytest
from django.core.cache import cache
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotate.models import Item, Membership, Role
from annotate.selectors import project_counts_cache_key
from curation.models import DatasetVersion, ProjectQuality
from tests.annotate.factories import ItemFactory, ProjectFactory, UserFactory, member
from training.models import RewardModel, TrainingRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch):
    kept: list[tuple[str, int]] = []
    monkeypatch.setattr("concord.jobs.send", lambda name, job_id: kept.append((name, job_id)))
    return kept


def items(project, count: int, *, annotated: int = 0) -> None:
    for n in range(count):
        item = ItemFactory(project=project)
        if n < annotated:
            Item.objects.filter(pk=item.pk).update(annotation_count=project.overlap, human_count=project.overlap)


def cards(client) -> str:
    response = client.get(reverse("annotate:project_list"))
    assert response.status_code == 200
    return response.content.decode()


def test_each_project_gets_a_card_with_its_counts_progress_and_role(login) -> None:
    user = UserFactory()
    first, second = ProjectFactory(name="Helpfulness", overlap=2), ProjectFactory(name="Harmless <b>", overlap=1)
    member(first, Role.CURATOR, username="x1")  # someone else
    Membership.objects.create(project=first, user=user, role=Role.CURATOR)
    Membership.objects.create(project=second, user=user, role=Role.ANNOTATOR)
    items(first, 4, annotated=1)
    page = cards(login(user))
    assert page.count('data-testid="project-card"') == 2
    assert "<strong>4</strong> items · <strong>1</strong> with 2 annotations (25%) · 2 annotations" in page
    assert "<strong>0</strong> items" in page
    assert "Harmless &lt;b&gt;" in page
    assert "Harmless <b>" not in page
    assert 'aria-valuenow="25"' in page
    assert f'href="{reverse("annotate:label", args=[first.pk])}"' in page


def test_projects_of_others_are_not_shown(login) -> None:
    ProjectFactory(name="Secret")
    mine = ProjectFactory(name="Mine")
    page = cards(login(member(mine)))
    assert "Mine" in page
    assert "Secret" not in page


def test_the_list_takes_the_same_number_of_queries_for_two_projects_or_eight(login) -> None:
    user = UserFactory()
    client = login(user)

    def queries(count: int) -> int:
        for _ in range(count):
            project = ProjectFactory()
            Membership.objects.create(project=project, user=user, role=Role.ADMIN)
            items(project, 3, annotated=1)
        with CaptureQueriesContext(connection) as captured:
            cards(client)
        return len(captured)

    assert queries(2) == queries(6)  # 2 projects, then 8


def test_a_big_project_shows_its_cached_counts_with_their_age_and_asks_for_new_ones(
    login, monkeypatch, sent, django_capture_on_commit_callbacks
) -> None:
    monkeypatch.setattr("annotate.selectors_projects.SMALL_PROJECT_ITEMS", 2)
    project = ProjectFactory(overlap=1)
    items(project, 3)
    client = login(member(project))
    cache.delete(project_counts_cache_key(project.pk))
    cache.delete(f"concord:project-counts-sent:{project.pk}")
    with django_capture_on_commit_callbacks(execute=True):
        assert "A big project: being counted" in cards(client)
    assert sent == [("annotate.tasks.project_counts_refresh_task", project.pk)]
    counted = {"items": 1_000_000, "complete": 250_000, "annotations": 800_000, "counted_at": time.time() - 30}
    cache.set(project_counts_cache_key(project.pk), counted)
    with django_capture_on_commit_callbacks(execute=True):
        page = cards(client)
    assert "<strong>1000000</strong> items · <strong>250000</strong> with 1 annotation (25%)" in page
    assert "(counted 30 s ago)" in page
    assert len(sent) == 1  # fresh counts: no new count asked for


def make_active_model(project, accuracy: float) -> RewardModel:
    version = DatasetVersion.objects.create(name="v1")
    run = TrainingRun.objects.create(project=project, dataset_version=version, status=TrainingRun.Status.SUCCEEDED)
    card = {"metrics": {"heldout": {"accuracy": accuracy}}}
    return RewardModel.objects.create(project=project, run=run, path="/models/x", model_card=card, is_active=True)


def quality(project, alpha: float, pairwise: float, items: int) -> None:
    report = {"agreement": {"alpha_strength": alpha, "pairwise": pairwise, "items": items}, "annotators": []}
    ProjectQuality.objects.create(
        project=project, requested_at=timezone.now(), report=report, computed_at=timezone.now()
    )


def test_curators_cards_fetch_agreement_and_the_active_model_from_a_real_link(login) -> None:
    project = ProjectFactory()
    page = cards(login(member(project, Role.CURATOR)))
    url = reverse("training:project_summaries")
    assert f'hx-get="{url}"' in page
    assert f'href="{url}"' in page
    assert f'id="project-summary-{project.pk}"' in page


def test_annotators_cards_have_no_agreement(login) -> None:
    project = ProjectFactory()
    page = cards(login(member(project)))
    assert f'id="project-summary-{project.pk}"' not in page


def test_the_summaries_fragment_swaps_agreement_and_model_into_each_card(login) -> None:
    curated, annotated, bare = ProjectFactory(name="Curated"), ProjectFactory(name="Annotated"), ProjectFactory()
    user = member(curated, Role.ADMIN)
    Membership.objects.create(project=annotated, user=user, role=Role.ANNOTATOR)
    Membership.objects.create(project=bare, user=user, role=Role.CURATOR)
    quality(curated, 0.6234, 0.81, 40)
    quality(annotated, 0.1, 0.2, 3)
    model = make_active_model(curated, 0.734)
    client = login(user)
    html = client.get(reverse("training:project_summaries"), HTTP_HX_REQUEST="true").content.decode()
    assert f'id="project-summary-{curated.pk}" class="project-summary" hx-swap-oob="true"' in html
    assert "α 0.62 · 0.81 pairwise" in html
    assert "over 40 items" in html
    assert f'href="{reverse("training:run_detail", args=[curated.pk, model.run_id])}">run #{model.run_id}</a>' in html
    assert "0.73 held-out accuracy" in html
    assert f'id="project-summary-{bare.pk}"' in html
    assert "not computed yet" in html
    assert f"project-summary-{annotated.pk}" not in html
    assert "α 0.10" not in html
    assert "<html" not in html
    whole = client.get(reverse("training:project_summaries")).content.decode()
    assert "<html" in whole
    assert "Curated" in whole
    assert "α 0.62" in whole


def test_the_summaries_take_the_same_number_of_queries_for_any_number_of_projects(login) -> None:
    user = UserFactory()
    client = login(user)

    def queries(count: int) -> int:
        for n in range(count):
            project = ProjectFactory()
            Membership.objects.create(project=project, user=user, role=Role.ADMIN)
            quality(project, 0.5, 0.7, 10)
            make_active_model(project, 0.6 + n / 100)
        with CaptureQueriesContext(connection) as captured:
            client.get(reverse("training:project_summaries"), HTTP_HX_REQUEST="true")
        return len(captured)

    assert queries(2) == queries(6)
