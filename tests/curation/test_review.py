"""The review queue and adjudication over HTTP: which items need a curator, decisions, flags, permissions."""

import re

import pytest
from django.urls import reverse

from annotate.labels import DEFAULT_SCHEMA
from annotate.models import Item, Membership, Role
from annotate.services.labeling import assignment_next
from curation.models import Adjudication, ItemFlag
from curation.selectors_review import disagreement_queue
from curation.services.adjudication import AdjudicationError, adjudication_record, item_flag_raise
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def queued(response) -> list[int]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200
    return [int(i) for i in re.findall(r'<tr data-item-id="(\d+)"', response.content.decode())]


def annotate(item, strengths, annotators, **fields):  # type: ignore[no-untyped-def]
    for strength, annotator in zip(strengths, annotators, strict=True):
        AnnotationFactory(item=item, annotator=annotator, strength=strength, **fields)


@pytest.fixture
def setup():  # type: ignore[no-untyped-def]
    """Three annotators: one item agreed, one split, one with a spread of 3, one flagged, one other source."""
    project = ProjectFactory(overlap=3)
    annotators = [member(project) for _ in range(3)]
    items = {name: ItemFactory(project=project) for name in ("agreed", "split", "spread", "flagged")}
    items["other"] = ItemFactory(project=project, source="elsewhere")
    annotate(items["agreed"], [-1, -1, -1], annotators)
    annotate(items["split"], [-2, 1, 2], annotators)
    annotate(items["spread"], [-3, 0, 0], annotators)
    annotate(items["flagged"], [2, 2], annotators[:2])
    annotate(items["other"], [-1, 1, 1], annotators)
    item_flag_raise(item=items["flagged"], user=annotators[0], reason="Both answers are wrong")
    curator = member(project, Role.CURATOR)
    return project, annotators, items, curator


def queue_url(project, **params) -> str:  # type: ignore[no-untyped-def]
    query = "&".join(f"{key}={value}" for key, value in params.items())
    return reverse("curation:review_queue", args=[project.pk]) + (f"?{query}" if query else "")


def adjudicate_url(item) -> str:  # type: ignore[no-untyped-def]
    return reverse("curation:adjudicate", args=[item.project_id, item.pk])


def test_the_queue_lists_exactly_the_disagreeing_and_flagged_items(login, setup) -> None:  # type: ignore[no-untyped-def]
    project, _, items, curator = setup
    shown = queued(login(curator).get(queue_url(project)))
    # Most severe first: a split with a spread of 4 (3.75), a person's flag (3), a 1-2 split (2.25), a spread of 3.
    assert shown == [items[name].pk for name in ("split", "flagged", "other", "spread")]


def severities(response) -> list[float]:  # type: ignore[no-untyped-def]
    return [float(s) for s in re.findall(r'<td data-testid="severity">([0-9.]+)</td>', response.content.decode())]


def test_the_queue_is_in_the_order_of_the_severity_it_shows(login) -> None:  # type: ignore[no-untyped-def]
    """The cases that were out of order: a rating spread adds to the severity shown, so it must order the queue
    too; a flag on an item with a single annotation is a person asking, and ranks high."""
    project = ProjectFactory(overlap=3, schema=DEFAULT_SCHEMA)
    annotators = [member(project) for _ in range(3)]
    splits = [ItemFactory(project=project) for _ in range(3)]
    for item in splits:
        annotate(item, [-1, 1, 1], annotators)
    # The same split, with a rating spread of 4 on top; created last, so that ids alone would put it last.
    rated = ItemFactory(project=project)
    for annotator, (strength, helpfulness) in zip(annotators, [(-1, 0), (1, 4), (1, 4)], strict=True):
        AnnotationFactory(
            item=rated, annotator=annotator, strength=strength, ratings={"a": {"helpfulness": helpfulness}}
        )
    lonely = ItemFactory(project=project)
    annotate(lonely, [1], annotators[:1])
    item_flag_raise(item=lonely, user=annotators[0], reason="The prompt is cut off")
    response = login(member(project, Role.CURATOR)).get(queue_url(project))
    shown = queued(response)
    assert severities(response) == sorted(severities(response), reverse=True)
    assert severities(response) == [3.0, 3.0, 2.25, 2.25, 2.25]
    assert shown[:2] == [rated.pk, lonely.pk]  # equal severity: more strengths first
    assert set(shown[2:]) == {item.pk for item in splits}


def test_the_queue_names_reasons(login, setup) -> None:  # type: ignore[no-untyped-def]
    project, _, _, curator = setup
    page = login(curator).get(queue_url(project)).content.decode()
    for label in ("Sign split", "Strength spread &gt; 2", "Flagged", "1 prefer A, 2 prefer B"):
        assert label in page


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"reason": "sign"}, {"split", "other"}),
        ({"reason": "strength"}, {"split", "spread"}),
        ({"reason": "flagged"}, {"flagged"}),
        ({"source": "elsewhere"}, {"other"}),
        ({"reason": "sign", "source": "tests"}, {"split"}),
    ],
)
def test_filters_narrow_the_queue(login, setup, params, expected) -> None:  # type: ignore[no-untyped-def]
    project, _, items, curator = setup
    assert set(queued(login(curator).get(queue_url(project, **params)))) == {items[name].pk for name in expected}


def test_a_rating_spread_is_found_and_filtered(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2, schema=DEFAULT_SCHEMA)
    first, second = member(project), member(project)
    rated = ItemFactory(project=project)
    AnnotationFactory(item=rated, annotator=first, strength=1, ratings={"a": {"helpfulness": 0}})
    AnnotationFactory(item=rated, annotator=second, strength=1, ratings={"a": {"helpfulness": 4}})
    calm = ItemFactory(project=project)
    AnnotationFactory(item=calm, annotator=first, strength=1, ratings={"a": {"helpfulness": 3}})
    AnnotationFactory(item=calm, annotator=second, strength=1, ratings={"a": {"helpfulness": 4}})
    client = login(member(project, Role.CURATOR))
    response = client.get(queue_url(project, reason="rating"))
    assert queued(response) == [rated.pk]
    assert "A helpfulness 0–4" in response.content.decode()


def test_a_final_decision_takes_the_item_out_until_it_is_flagged_again(login, setup) -> None:  # type: ignore[no-untyped-def]
    project, annotators, items, curator = setup
    client = login(curator)
    response = client.post(
        adjudicate_url(items["flagged"]), {"decision": "exclude", "reason": "Both responses are broken."}
    )
    assert response.status_code == 302
    assert items["flagged"].pk not in queued(client.get(queue_url(project)))
    assert not ItemFlag.objects.filter(item=items["flagged"], resolved=False).exists()
    # Raised again by the same annotator: the flag opens again and the item returns.
    item_flag_raise(item=items["flagged"], user=annotators[0], reason="Still broken")
    assert items["flagged"].pk in queued(client.get(queue_url(project)))


def test_a_final_label_is_recorded_and_the_item_leaves_the_queue(login, setup) -> None:  # type: ignore[no-untyped-def]
    project, _, items, curator = setup
    client = login(curator)
    response = client.post(
        adjudicate_url(items["split"]), {"decision": "label", "strength": "2", "reason": "B cites the source."}
    )
    assert response.status_code == 302
    decision = Adjudication.objects.get(item=items["split"])
    assert (decision.decision, decision.strength, decision.curator) == ("label", 2, curator)
    assert items["split"].pk not in queued(client.get(queue_url(project)))
    history = client.get(adjudicate_url(items["split"])).content.decode()
    assert "B cites the source." in history


def test_more_raises_extra_overlap_and_hands_the_item_out_again(login, setup) -> None:  # type: ignore[no-untyped-def]
    project, _, items, curator = setup
    split = items["split"]
    newcomer = member(project)
    Item.objects.filter(project=project).exclude(pk=split.pk).delete()
    assert assignment_next(project=project, annotator=newcomer) is None
    client = login(curator)
    response = client.post(adjudicate_url(split), {"decision": "more", "more": "2", "reason": "Need more views."})
    assert response.status_code == 302
    split.refresh_from_db()
    assert split.extra_overlap == 2
    # Out of the queue while the extra annotations are awaited...
    assert split.pk not in queued(client.get(queue_url(project)))
    handed = assignment_next(project=project, annotator=newcomer)
    assert handed is not None
    assert handed.pk == split.pk
    AnnotationFactory(item=split, annotator=newcomer, strength=2)
    AnnotationFactory(item=split, annotator=member(project), strength=-1)
    # ...and back once they are in, still split.
    assert split.pk in queued(client.get(queue_url(project)))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # Each message beside its field and in the form's summary (tests/curation/test_adjudicate.py has more).
        ({"decision": "label", "strength": "5", "reason": "x"}, "must be an integer from -3 to 3, got 5"),
        ({"decision": "label", "reason": "x"}, "choose the final label"),
        ({"decision": "label", "strength": "1", "reason": "  "}, "say why"),
        ({"decision": "more", "more": "0", "reason": "x"}, "greater than or equal to 1"),
    ],
)
def test_invalid_decisions_are_refused_with_the_field_named(login, setup, data, message) -> None:  # type: ignore[no-untyped-def]
    _, _, items, curator = setup
    response = login(curator).post(adjudicate_url(items["split"]), data)
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not Adjudication.objects.exists()
    items["split"].refresh_from_db()
    assert items["split"].extra_overlap == 0


def test_the_service_refuses_a_label_off_the_binary_scale(setup) -> None:  # type: ignore[no-untyped-def]
    project, _, items, curator = setup
    schema = project.label_schemas.get()
    schema.definition = {**schema.definition, "preference": {**schema.definition["preference"], "scale": "binary"}}
    schema.save()
    with pytest.raises(AdjudicationError, match="from -1 to 1, got 2"):
        adjudication_record(item=items["split"], curator=curator, decision="label", reason="r", strength=2)
    assert not Adjudication.objects.exists()


def test_decisions_are_appended_never_edited(setup) -> None:  # type: ignore[no-untyped-def]
    _, _, items, curator = setup
    first = adjudication_record(item=items["split"], curator=curator, decision="ambiguous", reason="Unclear.")
    adjudication_record(item=items["split"], curator=curator, decision="label", reason="Decided.", strength=-1)
    first.refresh_from_db()
    assert first.decision == "ambiguous"
    assert list(Adjudication.objects.filter(item=items["split"]).values_list("decision", flat=True)) == [
        "label",
        "ambiguous",
    ]


def test_annotators_are_refused_and_foreign_items_are_not_found(login, setup) -> None:  # type: ignore[no-untyped-def]
    project, annotators, items, curator = setup
    annotator = login(annotators[0])
    assert annotator.get(queue_url(project)).status_code == 403
    assert annotator.get(adjudicate_url(items["split"])).status_code == 403
    assert annotator.post(adjudicate_url(items["split"]), {"decision": "exclude", "reason": "x"}).status_code == 403
    foreign = ItemFactory()
    client = login(curator)
    url = reverse("curation:adjudicate", args=[project.pk, foreign.pk])
    assert client.get(url).status_code == 404
    assert client.post(url, {"decision": "exclude", "reason": "x"}).status_code == 404
    assert client.get(queue_url(foreign.project)).status_code == 404
    flag_url = reverse("curation:item_flag", args=[project.pk, foreign.pk])
    assert annotator.post(flag_url, {"reason": "x"}).status_code == 404
    assert not Adjudication.objects.exists()


def test_annotation_text_is_escaped(login, setup) -> None:  # type: ignore[no-untyped-def]
    project, annotators, _, curator = setup
    payload = '<script>alert("x")</script>'
    item = ItemFactory(project=project, response_a=f"Hi {payload} there", prompt=[{"role": "user", "content": payload}])
    AnnotationFactory(
        item=item,
        annotator=annotators[0],
        strength=-3,
        justification=payload,
        spans=[{"response": "a", "start": 3, "end": 11, "category": payload}],
    )
    AnnotationFactory(item=item, annotator=annotators[1], strength=3)
    item_flag_raise(item=item, user=curator, reason=payload)
    client = login(curator)
    for url in (queue_url(project), adjudicate_url(item)):
        page = client.get(url).content.decode()
        assert "<script>alert" not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    # The highlight cuts the text at the span and marks that piece.
    assert '<mark class="span-mark" title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"' in page


def test_an_annotator_flags_from_the_labeling_page(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    ItemFactory(project=project)
    annotator = member(project)
    client = login(annotator)
    page = client.post(reverse("annotate:label_next", args=[project.pk]), **HTMX).content.decode()
    item_id = int(re.search(r'data-item-id="(\d+)"', page).group(1))  # type: ignore[union-attr]
    assert "Flag for review" in page
    url = reverse("curation:item_flag", args=[project.pk, item_id])
    assert client.post(url, {"reason": ""}, **HTMX).status_code == 422
    response = client.post(url, {"reason": "Both answers are wrong"}, **HTMX)
    assert response.status_code == 200
    assert "Flagged for review" in response.content.decode()
    # Idempotent per user and item.
    assert client.post(url, {"reason": "Again"}, **HTMX).status_code == 200
    flag = ItemFlag.objects.get(item_id=item_id)
    assert (flag.raised_by, flag.reason, flag.resolved) == (annotator, "Both answers are wrong", False)
    assert disagreement_queue(project=project).filter(pk=item_id).exists()


def test_the_adjudication_page_shows_the_consensus_by_each_rule(login) -> None:  # type: ignore[no-untyped-def]
    from annotate.models import Membership
    from curation.selectors_review import item_consensus

    project = ProjectFactory(overlap=3)
    item = ItemFactory(project=project)
    trusted, doubtful, third = (member(project) for _ in range(3))
    for annotator, strength in ((trusted, -3), (doubtful, 3), (third, -1)):
        AnnotationFactory(item=item, annotator=annotator, strength=strength)
    Membership.objects.filter(user=doubtful).update(weight=0)
    consensus = item_consensus(item=item)
    assert (consensus.count, consensus.majority) == (3, -1)
    assert consensus.mean == pytest.approx(-1 / 3)
    assert consensus.weighted_mean == pytest.approx(-2.0)
    page = login(member(project, Role.CURATOR)).get(reverse("curation:adjudicate", args=[project.pk, item.pk]))
    assert page.status_code == 200
    assert 'data-testid="consensus"' in page.content.decode()
    assert "-2.00" in page.content.decode()


@pytest.mark.parametrize("paused", [False, True], ids=["never-handed-out", "paused"])
def test_an_annotator_flags_only_items_handed_to_them_and_not_while_paused(login, paused) -> None:  # type: ignore[no-untyped-def]
    """A flag puts an item before the curators: as with a submit, an annotator raises one only on an item the queue
    gave them, and nothing a paused annotator sends is taken. Curators flag any item."""
    project = ProjectFactory(overlap=2)
    ItemFactory.create_batch(2, project=project)
    annotator = member(project)
    held = assignment_next(project=project, annotator=annotator)
    assert held is not None
    other = Item.objects.filter(project=project).exclude(pk=held.pk).get()
    if paused:
        Membership.objects.filter(project=project, user=annotator).update(is_paused=True)
    client = login(annotator)
    target = held if paused else other
    response = client.post(reverse("curation:item_flag", args=[project.pk, target.pk]), {"reason": "Wrong"}, **HTMX)
    assert response.status_code == 422
    assert ("paused" if paused else "was not handed to you") in response.content.decode()
    assert not ItemFlag.objects.exists()
    curator = login(member(project, Role.CURATOR))
    response = curator.post(reverse("curation:item_flag", args=[project.pk, other.pk]), {"reason": "Wrong"}, **HTMX)
    assert response.status_code == 200
    assert ItemFlag.objects.filter(item=other).count() == 1
