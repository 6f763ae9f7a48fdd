"""Fine-grained labels over HTTP: ratings, error spans, missing information and corrections, posted with the
preference in one form and saved together, or refused together with every error named and shown in place."""

import copy
import json
import re
import uuid
from typing import Any

import pytest
from django.urls import reverse

from annotate.labels import DEFAULT_SCHEMA, PREFERENCE_ONLY_SCHEMA, Labels
from annotate.models import Annotation, Assignment, Item, ItemGroup
from annotate.services.labeling import LabelingError, annotation_submit, assignment_skip
from tests.annotate.factories import AssignmentFactory, ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
ATTRIBUTES = [attribute["name"] for attribute in DEFAULT_SCHEMA["attributes"]]
# An astral character (two UTF-16 units, one code point) before the marked words of response B.
RESPONSE_A = "Paris is the capital of France. It is also a large city."
RESPONSE_B = "The capital 🇫🇷 of France is Lyon, famously."


def schema_with(**sections: Any) -> dict[str, Any]:
    schema = copy.deepcopy(DEFAULT_SCHEMA)
    for name, changes in sections.items():
        schema[name].update(changes)
    return schema


def make_item(schema: dict[str, Any] | None = None, **fields: Any) -> Item:
    project = ProjectFactory(schema=schema or DEFAULT_SCHEMA)
    return ItemFactory(project=project, **{"response_a": RESPONSE_A, "response_b": RESPONSE_B, **fields})


def ratings(a: int = 3, b: int = 1) -> dict[str, str]:
    fields = {f"rating-a-{name}": str(a) for name in ATTRIBUTES}
    fields.update({f"rating-b-{name}": str(b) for name in ATTRIBUTES})
    return fields


def span(side: str, text: str, needle: str, category: str) -> dict[str, Any]:
    """A span over `needle`, in code points as Python counts them."""
    start = text.index(needle)
    return {"response": side, "start": start, "end": start + len(needle), "category": category}


VALID_SPANS = [
    span("a", RESPONSE_A, "It is also a large city.", "irrelevant"),
    span("b", RESPONSE_B, "Lyon", "wrong_grounding"),
]


def valid_post(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "strength": "-2",
        "justification": "A is right about the capital; B is not.",
        "submission_uuid": str(uuid.uuid4()),
        "spans_json": json.dumps(VALID_SPANS),
        "missing-b": ["missing_answer", "missing_minor"],
        **ratings(),
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def open_page(client, item: Item) -> str:  # type: ignore[no-untyped-def]
    """Take the item, as the labeling page does by htmx POST; its card."""
    response = client.post(reverse("annotate:label_next", args=[item.project_id]), **HTMX)
    assert response.status_code == 200
    body = response.content.decode()
    assert f'data-item-id="{item.pk}"' in body
    return body


def post(client, item: Item, data: dict[str, Any]):  # type: ignore[no-untyped-def]
    return client.post(reverse("annotate:submit", args=[item.project_id, item.pk]), data, **HTMX)


@pytest.fixture
def item() -> Item:
    return make_item()


@pytest.fixture
def client(login, item):  # type: ignore[no-untyped-def]
    client = login(member(item.project))
    open_page(client, item)
    return client


def test_the_page_asks_for_everything_the_schema_asks_for(client, item) -> None:  # type: ignore[no-untyped-def]
    body = open_page(client, item)
    for side in "ab":
        for name in ATTRIBUTES:
            for value in range(5):
                assert f'name="rating-{side}-{name}" value="{value}"' in body
        assert f'name="missing-{side}" value="missing_answer"' in body
    assert body.count('name="strength"') == 7
    assert 'name="spans_json" value="[]"' in body
    assert body.count('class="span-category"') == 5
    assert "Contradicts or misreads the given context." in body, "category descriptions are shown"
    assert "Overall helpfulness of the response to the prompt." in body, "attribute descriptions are shown"
    assert 'name="correction-a"' not in body, "this schema asks for no corrections"


def test_a_full_submit_stores_every_label_in_one_annotation(client, item) -> None:  # type: ignore[no-untyped-def]
    response = post(client, item, valid_post(**{"missing-a": "missing_major", "rating-b-verbosity": "4"}))
    assert response.status_code == 200
    assert f'data-item-id="{item.pk}"' not in response.content.decode(), "the next item (or none) is shown"
    annotation = Annotation.objects.get(item=item)
    assert annotation.schema is not None
    assert annotation.schema.version == 1
    assert annotation.strength == -2
    assert annotation.justification == "A is right about the capital; B is not."
    assert annotation.ratings == {
        "a": dict.fromkeys(ATTRIBUTES, 3),
        "b": {**dict.fromkeys(ATTRIBUTES, 1), "verbosity": 4},
    }
    assert annotation.spans == [
        {**VALID_SPANS[0], "text": "It is also a large city."},
        {**VALID_SPANS[1], "text": "Lyon"},
    ]
    assert RESPONSE_B[annotation.spans[1]["start"] : annotation.spans[1]["end"]] == "Lyon"
    assert sorted((m["response"], m["category"]) for m in annotation.missing) == [
        ("a", "missing_major"),
        ("b", "missing_answer"),
        ("b", "missing_minor"),
    ]
    assert annotation.corrections == {}
    assert Item.objects.get(pk=item.pk).annotation_count == 1


def test_corrections_are_stored_when_the_schema_asks_for_them(login) -> None:  # type: ignore[no-untyped-def]
    item = make_item(schema_with(correction={"enabled": True}))
    client = login(member(item.project))
    body = open_page(client, item)
    assert 'name="correction-a"' in body
    assert 'name="correction-b"' in body
    corrected = "The capital of France is Paris.\r\nLyon is its third city."
    response = post(client, item, valid_post(**{"correction-a": "", "correction-b": corrected}))
    assert response.status_code == 200
    annotation = Annotation.objects.get(item=item)
    assert annotation.corrections == {"b": "The capital of France is Paris.\nLyon is its third city."}


def out_of_text() -> str:
    return json.dumps([{"response": "a", "start": 10, "end": len(RESPONSE_A) + 1, "category": "irrelevant"}])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"rating-a-helpfulness": "7"}, "ratings.a.helpfulness: must be an integer from 0 to 4, got 7"),
        ({"rating-a-coherence": "high"}, "ratings.a.coherence: must be a whole number, got &#x27;high&#x27;"),
        ({"rating-b-humour": "2"}, "ratings.b.humour: not an attribute of this project"),
        ({"rating-b-verbosity": None}, "ratings.b: rate verbosity for response B"),
        ({"spans_json": out_of_text()}, f"spans[0]: 10-{len(RESPONSE_A) + 1} is not a non-empty span inside"),
        (
            {"spans_json": json.dumps([{"response": "b", "start": 4, "end": 4, "category": "redundant"}])},
            "spans[0]: 4-4 is not a non-empty span inside response B",
        ),
        (
            {"spans_json": json.dumps([*VALID_SPANS, {**VALID_SPANS[0], "category": "rude"}])},
            "spans[2].category: &#x27;rude&#x27; is not a category of this project",
        ),
        (
            {"spans_json": json.dumps([{**VALID_SPANS[0], "response": "c"}])},
            "spans[0].response: must be a or b",
        ),
        ({"spans_json": '[{"response": "a", "start": 1'}, "spans_json: the marked spans could not be read"),
        ({"spans_json": '{"response": "a"}'}, "spans_json: the marked spans must be a JSON list"),
        ({"missing-b": "missing_everything"}, "missing[0].category: &#x27;missing_everything&#x27; is not a"),
        ({"strength": None}, "strength: Choose which response is better (keys 1-7)."),
    ],
)
def test_invalid_labels_are_refused_naming_the_field_and_nothing_is_stored(client, item, changes, message) -> None:  # type: ignore[no-untyped-def]
    response = post(client, item, valid_post(**changes))
    assert response.status_code == 422
    body = response.content.decode()
    assert message in body
    assert f'data-item-id="{item.pk}"' in body, "the same item stays on screen"
    assert not Annotation.objects.exists()
    assert Item.objects.get(pk=item.pk).annotation_count == 0


def test_a_refused_submit_shows_each_error_at_its_field_and_keeps_what_was_entered(client, item) -> None:  # type: ignore[no-untyped-def]
    bad_span = {"response": "b", "start": 0, "end": 999, "category": "redundant"}
    data = valid_post(
        strength="1",
        justification="B <b>is</b> fine",
        spans_json=json.dumps([VALID_SPANS[0], bad_span]),
        **{"rating-a-helpfulness": "9", "rating-b-verbosity": None, "missing-a": "missing_major"},
    )
    body = post(client, item, data).content.decode()
    # The row of the rating, the rating block of response B, the span list of response B.
    assert re.search(
        r'aria-labelledby="rating-a-helpfulness-name".*?class="field-error">must be an integer from 0 to 4, got 9<',
        body,
        re.DOTALL,
    )
    response_b = body[body.index('<div class="response" data-side="b">') :]
    assert "rate verbosity for response B" in response_b
    assert f"spans[1]: 0-999 is not a non-empty span inside response B (0-{len(RESPONSE_B)})" in response_b
    response_a = body[body.index('<div class="response" data-side="a">') : body.index('data-side="b"')]
    assert "spans[1]" not in response_a
    # What was entered is still there.
    assert re.search(r'name="strength" value="1" required checked', body)
    assert 'name="rating-a-correctness" value="3" required checked' in body
    assert 'name="rating-a-helpfulness" value="4" required>' in body, "nothing checked for the refused value"
    assert 'name="missing-a" value="missing_major" checked' in body
    assert "B &lt;b&gt;is&lt;/b&gt; fine</textarea>" in body
    spans_json = re.search(r'name="spans_json" value="([^"]*)"', body)
    assert spans_json is not None
    assert json.loads(spans_json.group(1).replace("&quot;", '"')) == [VALID_SPANS[0], bad_span]


def test_untrusted_span_input_is_escaped_when_shown_back(client, item) -> None:  # type: ignore[no-untyped-def]
    evil = "<script>alert(1)</script>"
    response = post(client, item, valid_post(spans_json=json.dumps([{**VALID_SPANS[0], "category": evil}])))
    assert response.status_code == 422
    body = response.content.decode()
    assert evil not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in body


@pytest.mark.parametrize(
    ("justification", "message"),
    [
        ("", "justification: required in this project"),
        ("Too short", "justification: write at least 20 characters (got 9)"),
    ],
)
def test_a_required_justification_is_enforced_and_its_rule_shown(login, justification, message) -> None:  # type: ignore[no-untyped-def]
    item = make_item(schema_with(preference={"justification": "required", "justification_min_chars": 20}))
    client = login(member(item.project))
    assert "required, at least 20 characters" in open_page(client, item)
    response = post(client, item, valid_post(justification=justification))
    assert response.status_code == 422
    assert message in response.content.decode()
    assert not Annotation.objects.exists()
    assert post(client, item, valid_post(justification="B names the wrong city.")).status_code == 200
    assert Annotation.objects.get(item=item).justification == "B names the wrong city."


def test_the_binary_scale_offers_three_choices_and_refuses_strength_three(login) -> None:  # type: ignore[no-untyped-def]
    item = make_item(schema_with(preference={"scale": "binary"}))
    client = login(member(item.project))
    body = open_page(client, item)
    assert body.count('name="strength"') == 3
    assert "keys 1–3" in body
    for label in ("A is better", "Tie", "B is better"):
        assert f'<span class="label">{label}</span>' in body
    refused = post(client, item, valid_post(strength="3"))
    assert refused.status_code == 422
    assert "strength: Select a valid choice. 3 is not one of the available choices." in refused.content.decode()
    assert not Annotation.objects.exists()
    assert post(client, item, valid_post(strength="1")).status_code == 200
    assert Annotation.objects.get(item=item).strength == 1


def test_a_schema_without_preference_takes_ratings_alone(login) -> None:  # type: ignore[no-untyped-def]
    item = make_item(schema_with(preference={"enabled": False}))
    client = login(member(item.project))
    body = open_page(client, item)
    assert 'name="strength"' not in body
    assert 'id="justification"' not in body
    assert post(client, item, valid_post(strength=None, justification=None)).status_code == 200
    annotation = Annotation.objects.get(item=item)
    assert (annotation.strength, annotation.ratings["a"]["helpfulness"]) == (None, 3)


def test_resubmitting_full_labels_creates_one_annotation(client, item) -> None:  # type: ignore[no-untyped-def]
    data = valid_post()
    assert post(client, item, data).status_code == 200
    assert post(client, item, {**data, "strength": "3"}).status_code == 200
    assert [a.strength for a in Annotation.objects.filter(item=item)] == [-2]
    assert Item.objects.get(pk=item.pk).annotation_count == 1


def test_context_and_the_pair_within_its_group_are_shown(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(schema=DEFAULT_SCHEMA)
    group = ItemGroup.objects.create(
        project=project,
        prompt=[{"role": "user", "content": "Capital of France?"}],
        responses=[{"key": str(n), "text": f"Answer {n}"} for n in range(4)],
    )
    item = ItemFactory(
        project=project,
        group=group,
        response_a_index=0,
        response_b_index=2,
        context="Passage 1: <i>Paris</i> is the capital of France.",
    )
    client = login(member(project))
    body = open_page(client, item)
    assert "Response 1 vs 3 of 4" in body
    assert '<details class="item-context"' in body
    assert "Passage 1: &lt;i&gt;Paris&lt;/i&gt; is the capital of France." in body
    plain = make_item()
    assert "item-context" not in open_page(login(member(plain.project)), plain), "no context, no box"


def test_text_the_html_parser_would_change_is_also_sent_exactly(login) -> None:  # type: ignore[no-untyped-def]
    item = make_item(response_a="Line one\r\nLine <two>")
    body = open_page(login(member(item.project)), item)
    assert 'data-exact="&quot;Line one\\r\\nLine &lt;two&gt;&quot;"' in body
    assert body.count("data-exact=") == 1, "plain text is not sent twice"


# PostgreSQL stores no NUL in text or jsonb: a corrected response holding one was a 500 (issue 12, item 7).
NUL_IN_FREE_TEXT = [
    (
        {"correction-a": "Paris is\x00 the capital."},
        "correction-a",
        "holds the character U+0000, which cannot be stored",
    ),
    ({"correction-b": "\x00"}, "correction-b", "holds the character U+0000, which cannot be stored; remove it"),
    ({"justification": "A is right\x00"}, "justification", "Null characters are not allowed."),
    ({"spans_json": json.dumps(VALID_SPANS).replace("irrelevant", "irrelevant\x00")}, "spans", "Null characters"),
    ({"spans_json": json.dumps([{**VALID_SPANS[0], "category": "irrelevant\x00"}])}, "spans", "spans[0].category"),
    ({"missing-b": "missing_answer\x00"}, "missing-b", "missing[0].category"),
]


@pytest.mark.parametrize(("changes", "field", "message"), NUL_IN_FREE_TEXT)
def test_a_nul_in_any_free_text_is_refused_at_its_field_and_nothing_is_stored(login, changes, field, message) -> None:  # type: ignore[no-untyped-def]
    item = make_item(schema_with(correction={"enabled": True}))
    client = login(member(item.project))
    open_page(client, item)
    response = post(client, item, valid_post(**changes))
    assert response.status_code == 422
    body = response.content.decode()
    assert message in body
    if field.startswith("correction-"):
        # Shown under the box it is about, not only in the summary at the top.
        assert re.search(
            rf'name="{field}".*?</textarea>\s*<p class="field-error">{re.escape(message)}', body, re.DOTALL
        )
    assert not Annotation.objects.exists()
    assert Item.objects.get(pk=item.pk).annotation_count == 0


@pytest.mark.parametrize(
    ("labels", "path"),
    [
        (Labels(strength=-1, justification="A is right\x00"), "justification"),
        (Labels(strength=-1, corrections={"b": "Lyon \ud800"}), "corrections.b"),
    ],
)
def test_the_submit_service_refuses_text_no_column_can_hold_from_any_caller(labels, path) -> None:  # type: ignore[no-untyped-def]
    """Not only the form: an API or a script calling the service gets the field named, never a database error."""
    item = ItemFactory(project=ProjectFactory(schema={**PREFERENCE_ONLY_SCHEMA, "correction": {"enabled": True}}))
    annotator = member(item.project)
    AssignmentFactory(item=item, annotator=annotator)
    with pytest.raises(LabelingError) as refused:
        annotation_submit(item=item, annotator=annotator, labels=labels, seconds_spent=1, submission_uuid=uuid.uuid4())
    assert [error.path for error in refused.value.errors] == [path]
    assert "which cannot be stored" in str(refused.value)
    with pytest.raises(LabelingError, match=r"reason: holds the character U\+0000, which cannot be stored"):
        assignment_skip(item=item, annotator=annotator, reason="Outside\x00 my expertise")
    assert not Annotation.objects.exists()
    assert Assignment.objects.get(item=item, annotator=annotator).status == Assignment.Status.LEASED
