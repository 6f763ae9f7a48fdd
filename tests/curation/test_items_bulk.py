"""Bulk actions from the items list (curation:items_bulk): exclude, ask for more annotations, make gold with the
agreed answer; all or nothing, curators only, foreign items a 404, and back to the same list."""

import pytest
from django.urls import reverse

from annotate.models import GoldAnswer, Item, Role
from curation.models import Adjudication
from curation.services.adjudication import adjudication_record
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db


def bulk(client, project, items, action, **fields):  # type: ignore[no-untyped-def]
    data = {"action": action, "items": [item.pk for item in items], **fields}
    return client.post(reverse("curation:items_bulk", args=[project.pk]), data)


@pytest.fixture
def project():  # type: ignore[no-untyped-def]
    return ProjectFactory(overlap=2)


@pytest.fixture
def curator(login, project):  # type: ignore[no-untyped-def]
    return login(member(project, Role.CURATOR, username="cur"))


def test_it_excludes_the_ticked_items_with_the_reason(curator, project) -> None:  # type: ignore[no-untyped-def]
    ticked, other = [ItemFactory(project=project) for _ in range(2)], ItemFactory(project=project)
    response = bulk(curator, project, ticked, "exclude", reason="duplicates of the train split", list="q=dup&gold=0")
    assert response.status_code == 302
    assert response.url == reverse("annotate:item_list", args=[project.pk]) + "?q=dup&gold=0"
    decided = Adjudication.objects.filter(decision="exclude", reason="duplicates of the train split")
    assert sorted(decided.values_list("item_id", flat=True)) == sorted(item.pk for item in ticked)
    assert not Adjudication.objects.filter(item=other).exists()


def test_it_asks_for_more_annotations(curator, project) -> None:  # type: ignore[no-untyped-def]
    item = ItemFactory(project=project)
    bulk(curator, project, [item], "more", reason="hard one", more=2)
    item.refresh_from_db()
    assert item.extra_overlap == 2
    assert Adjudication.objects.get(item=item).decision == "more"


def test_a_refused_decision_writes_nothing_and_says_why(curator, project) -> None:  # type: ignore[no-untyped-def]
    items = [ItemFactory(project=project) for _ in range(2)]
    response = bulk(curator, project, items, "exclude", reason="")
    assert response.status_code == 302
    assert not Adjudication.objects.exists()
    page = curator.get(response.url).content.decode()
    assert "reason: say why" in page


def test_gold_takes_the_agreed_or_adjudicated_answer(curator, project) -> None:  # type: ignore[no-untyped-def]
    agreed, adjudicated = ItemFactory(project=project), ItemFactory(project=project)
    for strength in (-2, -1):
        AnnotationFactory(item=agreed, strength=strength)
    adjudication_record(
        item=adjudicated, curator=member(project, Role.CURATOR), decision="label", reason="B is right", strength=2
    )
    bulk(curator, project, [agreed, adjudicated], "gold")
    answers = dict(GoldAnswer.objects.values_list("item_id", "preference_sign"))
    assert answers == {agreed.pk: -1, adjudicated.pk: 1}
    assert Item.objects.filter(is_gold=True).count() == 2


def test_gold_refuses_items_without_an_answer_and_names_them(curator, project) -> None:  # type: ignore[no-untyped-def]
    agreed, disputed, fresh = (ItemFactory(project=project) for _ in range(3))
    for strength in (2, 2):
        AnnotationFactory(item=agreed, strength=strength)
    for strength in (-2, 3):
        AnnotationFactory(item=disputed, strength=strength)
    response = bulk(curator, project, [agreed, disputed, fresh], "gold")
    assert not GoldAnswer.objects.exists(), "all or nothing"
    page = curator.get(response.url).content.decode()
    assert f"items {disputed.number}, {fresh.number} have no agreed or adjudicated answer" in page


def test_a_foreign_item_is_a_404_and_nothing_is_written(curator, project) -> None:  # type: ignore[no-untyped-def]
    mine, foreign = ItemFactory(project=project), ItemFactory(project=ProjectFactory())
    assert bulk(curator, project, [mine, foreign], "exclude", reason="x").status_code == 404
    assert not Adjudication.objects.exists()


def test_annotators_and_outsiders_cannot_act(login, project) -> None:  # type: ignore[no-untyped-def]
    item = ItemFactory(project=project)
    assert bulk(login(member(project)), project, [item], "exclude", reason="x").status_code == 403
    assert (
        bulk(login(member(ProjectFactory(), Role.CURATOR)), project, [item], "exclude", reason="x").status_code == 404
    )
    assert not Adjudication.objects.exists()


def test_the_list_offers_the_bulk_form_with_its_query(curator, project) -> None:  # type: ignore[no-untyped-def]
    ItemFactory(project=project)
    html = curator.get(reverse("annotate:item_list", args=[project.pk]), {"gold": "0"}).content.decode()
    assert f'action="{reverse("curation:items_bulk", args=[project.pk])}"' in html
    assert 'name="list" value="gold=0"' in html
