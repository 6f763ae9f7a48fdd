"""Label schemas edited over HTTP, versioned, validated; gold items mixed in and scored."""

import json
import uuid

import pytest
from django.urls import reverse

from annotate.labels import DEFAULT_SCHEMA, PREFERENCE_ONLY_SCHEMA, Labels, schema_errors
from annotate.models import Annotation, GoldAnswer, Item, LabelSchema, Role
from annotate.selectors import gold_scores
from annotate.services.labeling import annotation_submit, assignment_next
from tests.annotate.factories import AssignmentFactory, ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db


def save_schema(client, project, definition):  # type: ignore[no-untyped-def]
    text = definition if isinstance(definition, str) else json.dumps(definition)
    return client.post(reverse("annotate:schema_edit", args=[project.pk]), {"definition": text})


def test_an_admin_saves_a_new_schema_version(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    client = login(member(project, Role.ADMIN))
    assert save_schema(client, project, DEFAULT_SCHEMA).status_code == 302
    assert save_schema(client, project, DEFAULT_SCHEMA).status_code == 302, "unchanged: no new version"
    versions = list(LabelSchema.objects.filter(project=project).values_list("version", flat=True))
    assert sorted(versions) == [1, 2]
    assert LabelSchema.objects.get(project=project, version=2).definition == DEFAULT_SCHEMA
    page = client.get(reverse("annotate:schema_edit", args=[project.pk])).content.decode()
    assert "Currently version 2" in page


def test_annotations_keep_the_schema_version_they_were_made_under(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    item = ItemFactory(project=project)
    annotator = member(project)
    AssignmentFactory(item=item, annotator=annotator)
    first = annotation_submit(
        item=item, annotator=annotator, labels=Labels(strength=2), seconds_spent=1, submission_uuid=uuid.uuid4()
    ).annotation
    save_schema(login(member(project, Role.ADMIN)), project, DEFAULT_SCHEMA)
    first.refresh_from_db()
    assert first.schema.version == 1
    assert first.schema.definition == PREFERENCE_ONLY_SCHEMA


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["attributes"].append({"name": "helpfulness", "min": 0, "max": 4}), "'helpfulness' is used twice"),
        (lambda d: d["attributes"][0].update(min=5), "attributes[0]: the scale must run upwards"),
        (lambda d: d["spans"]["categories"][1].update(color="red"), "spans.categories[1].color: must be a colour"),
        (lambda d: d["preference"].update(scale="ten"), "preference.scale: must be one of seven, binary"),
        (lambda d: d["attributes"][2].update(name="Has Spaces"), "attributes[2].name: must be lower_snake_case"),
        (lambda d: d.update(extra=1), "unknown sections: extra"),
    ],
)
def test_invalid_schemas_are_refused_with_the_path_named(login, change, message) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    definition = json.loads(json.dumps(DEFAULT_SCHEMA))
    change(definition)
    response = save_schema(login(member(project, Role.ADMIN)), project, definition)
    assert response.status_code == 422
    assert message in response.content.decode().replace("&#x27;", "'")
    assert LabelSchema.objects.filter(project=project).count() == 1


def test_broken_json_is_refused_with_its_position(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    response = save_schema(login(member(project, Role.ADMIN)), project, '{"preference": ')
    assert response.status_code == 422
    assert "Not valid JSON: Expecting value at line 1, column 16." in response.content.decode()


def schema_text(change) -> str:  # type: ignore[no-untyped-def]
    definition = json.loads(json.dumps(DEFAULT_SCHEMA))
    change(definition)
    return json.dumps(definition)


def weighted(number: str) -> str:
    """The default schema with a number (as JSON text) in an attribute's extra key, which the schema ignores."""
    return schema_text(lambda d: d["attributes"][0].update(weight=1)).replace('"weight": 1', f'"weight": {number}')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            schema_text(lambda d: d["attributes"][0].update(description="a\x00b")),
            "attributes[0].description holds the character U+0000, which cannot be stored; remove it.",
        ),
        (
            schema_text(lambda d: d["spans"]["categories"][1].update(description="a\ud800b")),
            "spans.categories[1].description holds an unpaired surrogate (U+D800), which cannot be stored; remove it.",
        ),
        (weighted("NaN"), "It holds NaN, which cannot be stored."),
        (weighted("1e999"), "It holds the number 1e999, which cannot be stored."),
        (weighted("9" * 5000), "Not a label schema: a number or the nesting is far too large."),
        (weighted("[" * 100_000 + "]" * 100_000), "Not a label schema: a number or the nesting is far too large."),
    ],
    ids=["nul", "surrogate", "nan", "infinite", "digits", "nesting"],
)
def test_what_a_database_cannot_store_is_a_form_error_on_the_definition(login, text, message) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    response = save_schema(login(member(project, Role.ADMIN)), project, text)
    assert response.status_code == 422
    assert response.context["form"].errors["definition"] == [message]
    assert LabelSchema.objects.filter(project=project).count() == 1


def test_a_schema_that_asks_for_nothing_is_refused() -> None:
    nothing = {**PREFERENCE_ONLY_SCHEMA, "preference": {**PREFERENCE_ONLY_SCHEMA["preference"], "enabled": False}}
    assert [str(error) for error in schema_errors(nothing)] == [
        "the schema asks for nothing: enable a preference, attributes, spans or corrections"
    ]
    assert schema_errors(DEFAULT_SCHEMA) == []


def test_only_admins_edit_the_schema(login) -> None:  # type: ignore[no-untyped-def]
    project, other = ProjectFactory(), ProjectFactory()
    assert (
        login(member(project, Role.CURATOR)).get(reverse("annotate:schema_edit", args=[project.pk])).status_code == 403
    )
    assert login(member(other, Role.ADMIN)).get(reverse("annotate:schema_edit", args=[project.pk])).status_code == 404


# Gold items.


def make_gold(login, project, item, sign, ratings=""):  # type: ignore[no-untyped-def]
    client = login(member(project, Role.CURATOR))
    url = reverse("annotate:item_detail", args=[project.pk, item.pk])
    return client.post(url, {"preference_sign": sign, "ratings": ratings, "note": "B cites the source"})


def test_a_curator_marks_an_item_gold(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(schema=DEFAULT_SCHEMA)
    item = ItemFactory(project=project)
    response = make_gold(login, project, item, 1, '{"b": {"correctness": 4}}')
    assert response.status_code == 302
    item.refresh_from_db()
    assert item.is_gold
    assert (item.gold_answer.preference_sign, item.gold_answer.ratings) == (1, {"b": {"correctness": 4}})


def test_gold_ratings_outside_the_schema_are_refused(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(schema=DEFAULT_SCHEMA)
    item = ItemFactory(project=project)
    response = make_gold(login, project, item, 1, '{"b": {"correctness": 9, "charm": 2}}')
    assert response.status_code == 422
    body = response.content.decode()
    assert "ratings.b.correctness: must be an integer from 0 to 4, got 9" in body
    assert "ratings.b.charm: not an attribute of this project" in body
    assert not GoldAnswer.objects.exists()


def test_gold_items_are_mixed_in_regardless_of_overlap_and_scored(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1, gold_rate=1.0)
    gold, ordinary = ItemFactory(project=project), ItemFactory(project=project)
    make_gold(login, project, gold, -1)
    right, wrong = member(project, username="right"), member(project, username="wrong")
    for annotator, strength in ((right, -2), (wrong, 3)):
        item = assignment_next(project=project, annotator=annotator)
        assert item == gold, "with rate 1 the gold item comes first, though overlap 1 is already reached"
        annotation_submit(
            item=item,
            annotator=annotator,
            labels=Labels(strength=strength),
            seconds_spent=2,
            submission_uuid=uuid.uuid4(),
        )
    assert assignment_next(project=project, annotator=right) == ordinary, "then ordinary work"
    scores = {s.annotator: s for s in gold_scores(project=project)}
    assert (scores["right"].preference_accuracy, scores["wrong"].preference_accuracy) == (1.0, 0.0)
    assert Item.objects.get(pk=gold.pk).annotation_count == 2
    page = login(member(project, Role.CURATOR)).get(reverse("annotate:item_list", args=[project.pk]))
    assert "100% (1/1)" in page.content.decode()


def test_gold_items_look_like_any_other_item(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(gold_rate=1.0)
    gold = ItemFactory(project=project)
    make_gold(login, project, gold, 1)
    taken = login(member(project)).post(reverse("annotate:label_next", args=[project.pk]), follow=True)
    page = taken.content.decode()
    assert f'data-item-id="{gold.pk}"' in page
    assert "gold" not in page.lower()


def test_annotators_cannot_see_item_pages(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    item = ItemFactory(project=project)
    client = login(member(project))
    assert client.get(reverse("annotate:item_list", args=[project.pk])).status_code == 403
    assert client.get(reverse("annotate:item_detail", args=[project.pk, item.pk])).status_code == 403
    other = ProjectFactory()
    curator = login(member(other, Role.CURATOR))
    assert curator.get(reverse("annotate:item_detail", args=[other.pk, item.pk])).status_code == 404
    assert not Annotation.objects.exists()
