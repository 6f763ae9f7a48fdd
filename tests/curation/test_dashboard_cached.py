"""The dashboard reads the figures a worker computed and cached with the annotators page's (ProjectQuality): through
HTTP, it asks for them once, says so and polls while they are computed, shows them with their age, refreshes on a
curator's click; and agreement over time, now computed from the label triples, gives the numbers the items x
annotators matrix gave."""

import re
from datetime import date, timedelta

import numpy as np
import pytest
from django.urls import reverse
from django.utils import timezone

from annotate.models import Item, Role
from curation.metrics import pairwise_agreement
from curation.models import Adjudication, ProjectQuality
from curation.selectors_quality import (
    AgreementPoint,
    LabelTable,
    agreement_over_time,
    item_states,
    pool_counts,
    state_and_pool_counts,
)
from curation.services.quality import QUALITY_REFRESH
from curation.tasks import project_quality_refresh_run
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.curation.figures import run_sent


def dashboard_url(project) -> str:  # type: ignore[no-untyped-def]
    return reverse("curation:dashboard", args=[project.pk])


def labelled(project, annotators, strengths):  # type: ignore[no-untyped-def]
    item = ItemFactory(project=project)
    for annotator, strength in zip(annotators, strengths, strict=True):
        AnnotationFactory(item=item, annotator=annotator, strength=strength, seconds_spent=20.0)
    return item


@pytest.fixture
def project():  # type: ignore[no-untyped-def]
    """Overlap 2: one item agreed, one disputed, one in progress, one unlabelled, and a labelled gold item."""
    project = ProjectFactory(overlap=2)
    ann, bob = member(project, username="ann"), member(project, username="bob")
    labelled(project, [ann, bob], [2, 1])
    labelled(project, [ann, bob], [2, -1])
    labelled(project, [ann], [-3])
    ItemFactory(project=project)
    gold = labelled(project, [ann, bob], [1, 1])
    Item.objects.filter(pk=gold.pk).update(is_gold=True)
    return project


def age(project, minutes: int) -> None:  # type: ignore[no-untyped-def]
    """Make the project's cached figures, and its last request, `minutes` older."""
    quality = ProjectQuality.objects.get(project=project)
    back = timedelta(minutes=minutes)
    ProjectQuality.objects.filter(pk=quality.pk).update(
        requested_at=quality.requested_at - back, computed_at=quality.computed_at - back
    )


@pytest.mark.django_db
def test_with_nothing_cached_the_dashboard_says_it_is_computing_and_asks_a_worker_once(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    html = get(dashboard_url(project)).content.decode()
    assert "No figures yet: a worker is computing them" in html
    assert "waiting for a worker" in html
    assert f'hx-get="{dashboard_url(project)}?shown="' in html
    assert 'hx-trigger="every 2s"' in html
    assert 'data-testid="states"' not in html
    assert 'data-testid="pools"' not in html
    quality = ProjectQuality.objects.get(project=project)
    assert (quality.status, quality.report) == ("queued", None)
    assert sent_jobs == [(QUALITY_REFRESH, quality.pk)]
    get(dashboard_url(project))
    get(reverse("curation:annotator_quality", args=[project.pk]))
    assert len(sent_jobs) == 1, "a second view of either page while it is on its way asks nothing more"


@pytest.mark.django_db
def test_after_the_worker_ran_the_dashboard_shows_the_figures_and_their_age(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    get(dashboard_url(project))
    assert run_sent(sent_jobs) == 1
    html = get(dashboard_url(project)).content.decode()
    assert re.search(r'data-testid="dashboard-age">0\xa0minutes ago<', html)
    assert 'data-testid="dashboard-labels">7<' in html
    assert "No figures yet" not in html
    assert "hx-get" not in html, "nothing to poll for"
    # Items by state (the gold item left out) and by pool (the gold item in).
    for state, count in {"agreed": 1, "disputed": 1, "in progress": 1, "unlabelled": 1}.items():
        assert f'data-state="{state}">{count}<' in html, state
    assert "2 of 4" in html
    for pool, count in {"gold": 2, "with humans": 2, "unlabelled": 1}.items():
        assert f'data-pool="{pool}">{count}<' in html, pool
    # The histogram of the seven strengths and one day of agreement: 2 agreeing pairs of 3.
    for bar in ("-3 (1)", "-2 (0)", "-1 (1)", "0 (0)", "+1 (3)", "+2 (2)", "+3 (0)"):
        assert bar in html, bar
    assert f"{timezone.now().date()}: 0.67 over 3 items" in html
    assert sent_jobs == [], "fresh figures: nothing asked"
    age(project, minutes=3)
    assert re.search(r'data-testid="dashboard-age">3\xa0minutes ago<', get(dashboard_url(project)).content.decode())


@pytest.mark.django_db
def test_one_refresh_serves_the_dashboard_and_the_annotators_page(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    get(reverse("curation:annotator_quality", args=[project.pk]))
    assert run_sent(sent_jobs) == 1
    html = get(dashboard_url(project)).content.decode()
    assert 'data-state="disputed">1<' in html
    assert sent_jobs == []
    assert ProjectQuality.objects.filter(project=project).count() == 1


@pytest.mark.django_db
def test_polling_answers_the_status_until_done_then_stops_and_reloads(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    get(dashboard_url(project))
    poll = get(f"{dashboard_url(project)}?shown=", HTTP_HX_REQUEST="true")
    assert poll.status_code == 200
    assert 'id="dashboard-status"' in poll.content.decode()
    assert "<html" not in poll.content.decode()
    ProjectQuality.objects.filter(project=project).update(
        status="running", step=4, step_name="gold accuracy, skips, item states and pools", heard_at=timezone.now()
    )
    assert "step 4 of 5, gold accuracy, skips, item states and pools" in get(dashboard_url(project)).content.decode()
    ProjectQuality.objects.filter(project=project).update(status="queued")
    run_sent(sent_jobs)
    done = get(f"{dashboard_url(project)}?shown=", HTTP_HX_REQUEST="true")
    assert done.status_code == 286
    assert done["HX-Refresh"] == "true", "figures newer than the page shows: reload it"
    shown = str(round(ProjectQuality.objects.get(project=project).computed_at.timestamp() * 1_000_000))
    same = get(f"{dashboard_url(project)}?shown={shown}", HTTP_HX_REQUEST="true")
    assert same.status_code == 286
    assert "HX-Refresh" not in same


@pytest.mark.django_db
def test_the_refresh_button_computes_again_and_comes_back_to_the_dashboard(get, curator, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    get(dashboard_url(project))
    run_sent(sent_jobs)
    html = get(dashboard_url(project)).content.decode()
    assert f'action="{reverse("curation:quality_refresh", args=[project.pk])}"' in html
    assert 'name="back" value="dashboard"' in html
    labelled(project, [member(project), member(project)], [1, 1])
    response = curator.post(reverse("curation:quality_refresh", args=[project.pk]), {"back": "dashboard"})
    assert response["Location"] == dashboard_url(project)
    quality = ProjectQuality.objects.get(project=project)
    assert (quality.status, quality.force) == ("queued", True)
    project_quality_refresh_run(quality.pk)
    html = get(dashboard_url(project)).content.decode()
    assert 'data-state="agreed">2<' in html
    assert 'data-testid="dashboard-labels">9<' in html
    # Any other `back` returns to the annotators page, never to an address from the form.
    response = curator.post(reverse("curation:quality_refresh", args=[project.pk]), {"back": "https://example.com"})
    assert response["Location"] == reverse("curation:annotator_quality", args=[project.pk])


@pytest.mark.django_db
def test_annotators_get_403_outsiders_404_and_neither_asks_for_anything(login, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    annotator = login(member(project))
    assert annotator.get(dashboard_url(project)).status_code == 403
    assert annotator.get(dashboard_url(project), HTTP_HX_REQUEST="true").status_code == 403
    stranger = login(member(ProjectFactory(), Role.ADMIN))
    assert stranger.get(dashboard_url(project)).status_code == 404
    assert not ProjectQuality.objects.filter(project=project).exists()
    assert sent_jobs == []


@pytest.mark.django_db
def test_the_dashboard_never_reads_the_annotations_or_counts_the_items(  # type: ignore[no-untyped-def]
    get, project, sent_jobs, django_assert_max_num_queries
) -> None:
    get(dashboard_url(project))
    run_sent(sent_jobs)
    with django_assert_max_num_queries(8) as first:
        get(dashboard_url(project))
    for query in first.captured_queries:
        assert "annotate_annotation" not in query["sql"], query["sql"]
        assert "annotate_item" not in query["sql"], query["sql"]


@pytest.mark.django_db
def test_a_decision_since_the_figures_is_counted_at_the_next_refresh(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    user = member(project, Role.CURATOR)
    get(dashboard_url(project))
    run_sent(sent_jobs)
    disputed = Item.objects.get(project=project, prefer_a_count=1, prefer_b_count=1)
    Adjudication.objects.create(item=disputed, curator=user, decision="label", strength=1, reason="clear")
    age(project, minutes=10)
    get(dashboard_url(project))
    assert run_sent(sent_jobs) == 1
    html = get(dashboard_url(project)).content.decode()
    assert 'data-state="adjudicated">1<' in html, "the decision changed the fingerprint: computed again"
    assert 'data-state="disputed">0<' in html


@pytest.mark.django_db
def test_a_report_cached_before_the_dashboard_is_computed_again(get, project, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    get(dashboard_url(project))
    run_sent(sent_jobs)
    quality = ProjectQuality.objects.get(project=project)
    ProjectQuality.objects.filter(pk=quality.pk).update(report={**quality.report, "dashboard": None})
    html = get(dashboard_url(project)).content.decode()
    assert "Refreshing on a worker" in html, "fresh, but without the dashboard's figures: asked for"
    assert run_sent(sent_jobs) == 1, "and computed, though no label changed"
    assert 'data-state="disputed">1<' in get(dashboard_url(project)).content.decode()


@pytest.mark.django_db
def test_states_and_pools_from_one_pass_match_their_own_counts(project) -> None:  # type: ignore[no-untyped-def]
    assert state_and_pool_counts(project=project) == (item_states(project=project), pool_counts(project=project))


# Agreement over time: the sparse computation against the matrix one it replaced.


def dense_agreement_over_time(table: LabelTable) -> list[AgreementPoint]:
    """The former computation, over the items x annotators matrix."""
    matrix = np.sign(table.matrix)
    pairable = (~np.isnan(matrix)).sum(axis=1) >= 2
    last = np.full(len(table.item_ids), -np.inf)
    np.maximum.at(last, table.row_item, table.created)
    days = (last // 86400).astype(np.int64)
    points = []
    for day in np.unique(days[pairable]):
        rows = matrix[pairable & (days == day)]
        value = pairwise_agreement(rows)
        if not np.isnan(value):
            points.append(AgreementPoint(date.fromordinal(date(1970, 1, 1).toordinal() + int(day)), len(rows), value))
    return points


def random_table(rng: np.random.Generator, items: int, annotators: int) -> LabelTable:
    """Items labelled by 0 to 5 distinct annotators each, strengths -3..3, over about three weeks."""
    pairs = [
        (item, annotator)
        for item in range(items)
        for annotator in rng.choice(annotators, size=rng.integers(0, 6), replace=False)
    ]
    row_item = np.array([item for item, _ in pairs], dtype=np.int64)
    row_annotator = np.array([annotator for _, annotator in pairs], dtype=np.int64)
    labelled_items, row_item = np.unique(row_item, return_inverse=True)
    return LabelTable(
        item_ids=labelled_items + 1000,
        annotator_ids=np.arange(annotators, dtype=np.int64) + 1,
        row_item=row_item.astype(np.int64),
        row_annotator=row_annotator,
        strength=rng.integers(-3, 4, len(pairs)).astype(np.float64),
        seconds=np.full(len(pairs), np.nan),
        created=1.7e9 + rng.uniform(0, 21 * 86400, len(pairs)),
        ratings=[{} for _ in pairs],
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agreement_over_time_from_the_triples_gives_the_matrix_numbers(seed: int) -> None:
    table = random_table(np.random.default_rng(seed), items=2000, annotators=12)
    sparse, dense = agreement_over_time(table), dense_agreement_over_time(table)
    assert len(dense) > 15
    assert [(p.day, p.items) for p in sparse] == [(p.day, p.items) for p in dense]
    assert [p.agreement for p in sparse] == pytest.approx([p.agreement for p in dense], abs=1e-12)


def test_agreement_over_time_with_no_labels_is_empty() -> None:
    assert agreement_over_time(random_table(np.random.default_rng(0), items=0, annotators=3)) == []
