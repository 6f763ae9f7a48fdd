"""The annotator-quality page, its pause and weight forms, and the dashboard, through HTTP and the selectors.

The annotators page shows what a worker computed (curation.services.quality); `computed` plays the worker: it
opens the page, which asks for a refresh, and runs the task the page sent, as a worker would."""

import pytest
from django.urls import reverse

from annotate.models import Annotation, Item, Membership, Role
from annotate.rules import ItemState
from annotate.services.labeling import assignment_next
from curation.models import Adjudication
from curation.selectors_quality import item_states, quality_report
from curation.services.quality import QUALITY_REFRESH
from curation.tasks import project_quality_refresh_run
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db


@pytest.fixture
def computed(login, sent_jobs, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    """A curator's client for the project's annotators page, once a worker has run the refresh it asked for."""

    def _computed(project):  # type: ignore[no-untyped-def]
        client = login(member(project, Role.CURATOR))
        with django_capture_on_commit_callbacks(execute=True):
            assert client.get(reverse("curation:annotator_quality", args=[project.pk])).status_code == 200
        while sent_jobs:
            name, quality_id = sent_jobs.pop(0)
            assert name == QUALITY_REFRESH
            project_quality_refresh_run(quality_id)
        return client

    return _computed


@pytest.fixture
def project():  # type: ignore[no-untyped-def]
    return ProjectFactory(overlap=2)


def _label(project, annotators, strengths, seconds=30.0):  # type: ignore[no-untyped-def]
    """One item labelled by each annotator with the given strength."""
    item = ItemFactory(project=project)
    for annotator, strength in zip(annotators, strengths, strict=True):
        AnnotationFactory(item=item, annotator=annotator, strength=strength, seconds_spent=seconds)
    return item


@pytest.fixture
def team(project):  # type: ignore[no-untyped-def]
    """Three careful annotators who agree, and one fast one who always says the opposite."""
    careful = [member(project, username=f"careful{i}") for i in range(3)]
    fast = member(project, username="fast")
    for _ in range(10):
        item = _label(project, careful, [2, 2, 1], seconds=60.0)
        AnnotationFactory(item=item, annotator=fast, strength=-2, seconds_spent=5.0)
    return careful, fast


@pytest.mark.parametrize("page", ["curation:annotator_quality", "curation:dashboard"])
def test_curators_see_the_pages_annotators_do_not_and_outsiders_get_404(login, project, team, page) -> None:  # type: ignore[no-untyped-def]
    url = reverse(page, args=[project.pk])
    assert login(member(project, Role.CURATOR)).get(url).status_code == 200
    assert login(team[1]).get(url).status_code == 403
    stranger = member(ProjectFactory(), Role.ADMIN)
    assert login(stranger).get(url).status_code == 404


def test_the_quality_page_flags_the_fast_contrarian(computed, project, team) -> None:  # type: ignore[no-untyped-def]
    response = computed(project).get(reverse("curation:annotator_quality", args=[project.pk]))
    html = response.content.decode()
    assert "fast and low agreement" in html
    assert html.count('class="dot flagged"') == 1
    report = quality_report(project=project)
    by_name = {a.username: a for a in report.annotators}
    assert by_name["fast"].agreement == 0.0
    assert by_name["fast"].flags == ["fast and low agreement"]
    assert by_name["careful0"].agreement == 1.0
    assert by_name["careful0"].flags == []
    assert by_name["careful0"].median_seconds == 60.0
    assert report.agreement.items == 10
    assert report.agreement.fleiss_items == 10
    # Dawid-Skene trusts the three who agree and not the one who always contradicts them.
    assert by_name["fast"].reliability < 0.5 < by_name["careful0"].reliability


def test_names_are_escaped_in_the_table_and_the_chart(computed, project) -> None:  # type: ignore[no-untyped-def]
    sneaky = member(project, username="<script>x</script>")
    other = member(project, username="plain")
    for _ in range(6):
        _label(project, [sneaky, other], [1, 1])
    html = computed(project).get(reverse("curation:annotator_quality", args=[project.pk]))
    assert 'class="dot"' in html.content.decode()  # the chart is drawn
    assert "<script>x</script>" not in html.content.decode()
    assert "&lt;script&gt;x&lt;/script&gt;" in html.content.decode()


def test_a_zero_weight_stops_an_annotator_from_moving_the_consensus(project, team) -> None:  # type: ignore[no-untyped-def]
    careful, fast = team
    Annotation.objects.filter(annotator=careful[1]).update(strength=1)
    Annotation.objects.filter(annotator=careful[2]).update(strength=0)
    # careful0 (+2) against the others' mean (1 + 0 - 2) / 3 < 0: the fast contrarian tips it.
    assert {a.username: a.agreement for a in quality_report(project=project).annotators}["careful0"] == 0.0
    Membership.objects.filter(user=fast).update(weight=0)
    assert {a.username: a.agreement for a in quality_report(project=project).annotators}["careful0"] == 1.0


def test_pausing_stops_new_work_and_resuming_restores_it(login, project) -> None:  # type: ignore[no-untyped-def]
    ItemFactory(project=project)
    annotator = member(project)
    membership = Membership.objects.get(user=annotator, project=project)
    client = login(member(project, Role.CURATOR))
    url = reverse("curation:member_pause", args=[project.pk, membership.pk])
    assert client.post(url, {"paused": "1"}).status_code == 302
    membership.refresh_from_db()
    assert membership.is_paused
    assert assignment_next(project=project, annotator=annotator) is None
    client.post(url, {"paused": "0"})
    assert assignment_next(project=project, annotator=annotator) is not None


def test_setting_a_weight_checks_the_range(login, project) -> None:  # type: ignore[no-untyped-def]
    membership = Membership.objects.get(user=member(project), project=project)
    client = login(member(project, Role.CURATOR))
    url = reverse("curation:member_weight", args=[project.pk, membership.pk])
    client.post(url, {"weight": "0.25"})
    membership.refresh_from_db()
    assert membership.weight == 0.25
    client.post(url, {"weight": "1.5"})
    membership.refresh_from_db()
    assert membership.weight == 0.25


def test_writes_refuse_get_annotators_and_foreign_memberships(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    mine = Membership.objects.get(user=annotator, project=project)
    other_project = ProjectFactory()
    foreign = Membership.objects.get(user=member(other_project), project=other_project)
    curator = login(member(project, Role.CURATOR))
    assert curator.get(reverse("curation:member_pause", args=[project.pk, mine.pk])).status_code == 405
    assert (
        curator.post(reverse("curation:member_pause", args=[project.pk, foreign.pk]), {"paused": "1"}).status_code
        == 404
    )
    assert (
        curator.post(reverse("curation:member_weight", args=[project.pk, foreign.pk]), {"weight": "0"}).status_code
        == 404
    )
    assert (
        login(annotator).post(reverse("curation:member_pause", args=[project.pk, mine.pk]), {"paused": "1"}).status_code
        == 403
    )
    foreign.refresh_from_db()
    mine.refresh_from_db()
    assert not foreign.is_paused
    assert foreign.weight == 1.0
    assert not mine.is_paused


def test_items_by_state_on_a_small_project(computed, project) -> None:  # type: ignore[no-untyped-def]
    a, b = member(project), member(project)
    curator = member(project, Role.CURATOR)
    _label(project, [a], [2])  # in progress
    ItemFactory(project=project)  # unlabelled
    _label(project, [a, b], [2, 1])  # agreed
    _label(project, [a, b], [-3, -1])  # agreed: a spread of 2 is still agreement
    _label(project, [a, b], [2, -1])  # disputed: split sides
    _label(project, [a, b], [3, 0])  # disputed: a tie against a strong preference
    adjudicated = _label(project, [a, b], [1, -1])
    Adjudication.objects.create(item=adjudicated, curator=curator, decision="label", strength=1, reason="clear")
    excluded = _label(project, [a], [1])
    Adjudication.objects.create(item=excluded, curator=curator, decision="label", strength=1, reason="first")
    Adjudication.objects.create(item=excluded, curator=curator, decision="exclude", reason="then broken")
    more = _label(project, [a, b], [1, -1])
    Adjudication.objects.create(item=more, curator=curator, decision="more", reason="unsure")
    Item.objects.filter(pk=more.pk).update(extra_overlap=1)
    gold = _label(project, [a, b], [1, -1])
    Item.objects.filter(pk=gold.pk).update(is_gold=True)
    expected = {
        ItemState.UNLABELLED: 1,
        ItemState.IN_PROGRESS: 2,
        ItemState.AGREED: 2,
        ItemState.DISPUTED: 2,
        ItemState.ADJUDICATED: 1,
        ItemState.EXCLUDED: 1,
    }
    assert item_states(project=project) == expected
    html = computed(project).get(reverse("curation:dashboard", args=[project.pk])).content.decode()
    assert 'data-state="disputed">2<' in html
    assert "6 of 9" in html  # items past labelling (imported ones count as labelled), the gold one left out


def test_the_report_takes_a_fixed_number_of_queries(project, team, django_assert_max_num_queries) -> None:  # type: ignore[no-untyped-def]
    with django_assert_max_num_queries(6):
        quality_report(project=project)
    for _ in range(5):
        _label(project, [member(project), member(project)], [1, 1])
    with django_assert_max_num_queries(6):
        quality_report(project=project)


def test_ratings_get_an_alpha_per_attribute(project) -> None:  # type: ignore[no-untyped-def]
    a, b = member(project), member(project)
    for value in range(5):
        item = ItemFactory(project=project)
        for annotator in (a, b):
            AnnotationFactory(
                item=item,
                annotator=annotator,
                strength=1,
                ratings={"a": {"helpfulness": value}, "b": {"helpfulness": 4 - value}},
            )
    [attribute] = quality_report(project=project).agreement.attributes
    assert attribute.name == "helpfulness"
    assert attribute.alpha == pytest.approx(1.0)
    assert attribute.units == 10
