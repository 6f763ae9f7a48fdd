"""The build form's live count (curation.selectors_versions.version_row_count, its fragment at
curation:version_count): the rows a freeze of the same filters then writes, by state and by provenance."""

import pytest
from django.urls import reverse

from annotate.models import Annotation, Membership, Role
from curation.models import Adjudication, DatasetVersion
from curation.services.quality import membership_weight_set
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, UserFactory, member
from tests.curation.test_versions import adjudicate, annotate_item, freeze

STATES = ("agreed", "adjudicated", "disputed")


@pytest.fixture
def project():  # type: ignore[no-untyped-def]
    """Overlap 2; one item for each way an item gives a row or none, and annotators of unequal weight."""
    project = ProjectFactory(overlap=2)
    items = [ItemFactory(project=project, source="web" if n % 2 else "books") for n in range(16)]
    annotate_item(items[0], -2, -1)  # agreed, A
    annotate_item(items[1], 3, 3)  # agreed, B
    annotate_item(items[2], 0, 2)  # agreed, agreement 0.5
    annotate_item(items[3], 1, 1)
    adjudicate(items[3], Adjudication.Decision.LABEL, -3)  # adjudicated
    annotate_item(items[4], 1, 1)
    adjudicate(items[4], Adjudication.Decision.LABEL, 0)  # adjudicated as a tie: no row
    annotate_item(items[5], 2, 2)
    adjudicate(items[5], Adjudication.Decision.EXCLUDE)  # excluded
    annotate_item(items[6], 1, -1)  # disputed, a tie under the mean
    annotate_item(items[7], 3, -1)  # disputed, B under the mean
    annotate_item(items[8], 3)  # in progress
    annotate_item(items[9], 1, origin=Annotation.Origin.IMPORTED)  # imported
    annotate_item(items[10], -2, 2, -3, origin=Annotation.Origin.IMPORTED)  # imported, disputed
    annotate_item(items[11], 1, 2, 3)  # agreed, three annotators
    # Weighted: a light annotator says B strongly, a heavy one A mildly; and a weightless one alone on a side.
    light, heavy, weightless = (member(project, Role.ANNOTATOR) for _ in range(3))
    for user, weight in ((light, 0.2), (heavy, 1.0), (weightless, 0.0)):
        membership_weight_set(membership=Membership.objects.get(project=project, user=user), weight=weight)
    AnnotationFactory(item=items[12], annotator=light, strength=3)
    AnnotationFactory(item=items[12], annotator=heavy, strength=-1)  # mean B, weighted A
    AnnotationFactory(item=items[13], annotator=weightless, strength=2)
    AnnotationFactory(item=items[13], annotator=heavy, strength=0)  # mean B, weighted a tie
    AnnotationFactory(item=items[14], annotator=weightless, strength=-2)
    AnnotationFactory(item=items[14], annotator=light, strength=1)  # mean A, weighted B
    AnnotationFactory(item=items[15], annotator=heavy, strength=2)
    AnnotationFactory(item=items[15], annotator=light, strength=-3)  # a tie under both
    half = member(project, Role.ANNOTATOR)
    membership_weight_set(membership=Membership.objects.get(project=project, user=half), weight=0.5)
    tied = ItemFactory(project=project)
    AnnotationFactory(item=tied, annotator=half, strength=2)
    AnnotationFactory(item=tied, annotator=heavy, strength=-1)  # mean B, weighted a tie
    return project


def count_url(project, **filters):  # type: ignore[no-untyped-def]
    query = {"projects": [project.pk], "consensus": "mean", "min_agreement": 0, "train": 0.8}
    query |= {"validation": 0.1, "test": 0.1, "seed": 0, "states": ["agreed", "adjudicated"]}
    query |= {"provenance": ["human_consensus", "adjudicated", "imported"], **filters}
    from urllib.parse import urlencode

    return reverse("curation:version_count", args=[project.pk]) + "?" + urlencode(query, doseq=True)


def shown(response, name):  # type: ignore[no-untyped-def]
    """The number in the fragment's cell with data-testid `name`."""
    html = response.content.decode()
    start = html.index(f'data-testid="{name}">') + len(f'data-testid="{name}">')
    return int(html[start : html.index("<", start)].removeprefix("at most "))


CASES = [
    {},
    {"states": list(STATES)},
    {"states": ["disputed"]},
    {"states": ["adjudicated"]},
    {"states": list(STATES), "provenance": ["imported"]},
    {"states": list(STATES), "provenance": ["human_consensus", "adjudicated"]},
    {"states": list(STATES), "min_agreement": 0.6},
    {"states": list(STATES), "min_agreement": 0.6667},
    {"states": list(STATES), "min_agreement": 1},
    {"states": list(STATES), "sources": "web"},
    {"states": list(STATES), "consensus": "weighted"},
    {"states": list(STATES), "consensus": "weighted", "min_agreement": 0.5},
]


@pytest.mark.django_db
@pytest.mark.parametrize("filters", CASES)
def test_the_count_equals_the_rows_a_freeze_then_writes(project, login, filters):  # type: ignore[no-untyped-def]
    client = login(member(project, Role.CURATOR))
    response = client.get(count_url(project, **filters), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    asked = {k: v for k, v in filters.items() if k != "sources"}
    if "sources" in filters:
        asked["sources"] = [filters["sources"]]
    version = freeze(project, **asked)
    assert version.status == DatasetVersion.Status.FROZEN
    counts = version.manifest["counts"]
    assert shown(response, "row-total") == version.row_count
    for state in ("agreed", "disputed"):
        assert shown(response, f"count-{state}") == counts["state"].get(state, 0)
    assert shown(response, "count-adjudicated") == counts["provenance"].get("adjudicated", 0)
    assert shown(response, "count-imported") == counts["provenance"].get("imported", 0)
    assert shown(response, "count-human") == counts["provenance"].get("human_consensus", 0)
    assert shown(response, "count-ai") == 0


@pytest.mark.django_db
@pytest.mark.parametrize("min_agreement", [0, 0.5])
def test_the_weighted_count_holds_with_every_weight_above_zero(project, login, min_agreement):  # type: ignore[no-untyped-def]
    """With no weightless annotator only the items with both sides taken are weighed one by one."""
    Membership.objects.filter(project=project, weight=0).update(weight=0.4)
    filters = {"states": list(STATES), "consensus": "weighted", "min_agreement": min_agreement}
    response = login(member(project, Role.CURATOR)).get(count_url(project, **filters))
    version = freeze(project, **filters)
    assert shown(response, "row-total") == version.row_count
    assert shown(response, "count-disputed") == version.manifest["counts"]["state"].get("disputed", 0)


@pytest.mark.django_db
def test_the_cases_tell_the_rules_apart(project, login):  # type: ignore[no-untyped-def]
    """The fixture's items make the rules differ, so the comparisons above can fail."""
    client = login(member(project, Role.CURATOR))
    every = {"states": list(STATES)}
    mean = shown(client.get(count_url(project, **every)), "row-total")
    weighted = client.get(count_url(project, **every, consensus="weighted"))
    strict = shown(client.get(count_url(project, **every, min_agreement=1)), "row-total")
    assert mean != strict
    assert shown(weighted, "row-total") != mean  # the weightless annotator's item is a tie when weighed


@pytest.mark.django_db
def test_dawid_skene_counts_an_upper_bound_and_says_so(project, login):  # type: ignore[no-untyped-def]
    client = login(member(project, Role.CURATOR))
    response = client.get(count_url(project, states=list(STATES), consensus="dawid_skene"))
    version = freeze(project, states=list(STATES), consensus="dawid_skene")
    assert "at most" in response.content.decode()
    assert shown(response, "row-total") >= version.row_count


@pytest.mark.django_db
def test_the_build_form_shows_the_count_of_its_defaults(project, login):  # type: ignore[no-untyped-def]
    client = login(member(project, Role.CURATOR))
    response = client.get(reverse("curation:version_new", args=[project.pk]))
    assert response.status_code == 200
    assert 'hx-get="' + reverse("curation:version_count", args=[project.pk]) + '"' in response.content.decode()
    assert shown(response, "row-total") == freeze(project).row_count


@pytest.mark.django_db
def test_invalid_filters_give_no_count_but_their_errors(project, login):  # type: ignore[no-untyped-def]
    client = login(member(project, Role.CURATOR))
    response = client.get(count_url(project, train=0.5))
    assert response.status_code == 200
    assert 'data-testid="row-count-invalid"' in response.content.decode()
    assert "add up to 1" in response.content.decode()
    assert 'data-testid="row-total"' not in response.content.decode()


@pytest.mark.django_db
def test_the_count_refuses_annotators_and_strangers(project, login):  # type: ignore[no-untyped-def]
    assert login(member(project, Role.ANNOTATOR)).get(count_url(project)).status_code == 403
    assert login(UserFactory()).get(count_url(project)).status_code == 404


@pytest.mark.django_db
def test_the_count_leaves_out_projects_the_user_does_not_curate(project, login):  # type: ignore[no-untyped-def]
    curator = member(project, Role.CURATOR)
    other = ProjectFactory(overlap=1)
    annotate_item(ItemFactory(project=other), 2)
    response = login(curator).get(count_url(project, projects=[project.pk, other.pk]))
    assert 'data-testid="row-total"' not in response.content.decode()
    assert "projects" in response.content.decode()


@pytest.mark.django_db
def test_a_big_project_s_build_page_comes_at_once_and_asks_for_its_count(login, project, monkeypatch):  # type: ignore[no-untyped-def]
    """Counting a million items takes seconds: above the small-project size the page renders without it and its
    count section fetches the fragment as it loads."""
    import annotate.selectors

    curator = login(member(project, Role.CURATOR))
    new_url = reverse("curation:version_new", args=[project.pk])
    assert 'data-testid="row-total"' in curator.get(new_url).content.decode()
    monkeypatch.setattr(annotate.selectors, "SMALL_PROJECT_ITEMS", 3)
    page = curator.get(new_url).content.decode()
    assert 'data-testid="row-total"' not in page
    assert 'data-testid="row-count-later"' in page
    assert (
        f'hx-get="{reverse("curation:version_count", args=[project.pk])}" hx-include="#version-form" hx-trigger="load"'
        in page
    )
