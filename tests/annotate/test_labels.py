"""The label rules on their own (annotate.labels is pure Python)."""

import copy

import pytest

from annotate.labels import DEFAULT_SCHEMA, PRESETS, LabelError, Labels, labels_clean, schema_errors
from concord.errors import FieldError

TEXTS = {"a": "Paris 🗼 is the capital of France.", "b": "Lyon is."}
ALL_RATINGS = {side: {a["name"]: 2 for a in DEFAULT_SCHEMA["attributes"]} for side in "ab"}


def clean(**fields):  # type: ignore[no-untyped-def]
    return labels_clean(DEFAULT_SCHEMA, Labels(**{"strength": 1, "ratings": ALL_RATINGS, **fields}), texts=TEXTS)


def test_every_preset_is_a_valid_schema() -> None:
    for name, definition in PRESETS.items():
        assert schema_errors(definition) == [], name


def test_span_offsets_are_code_points_and_the_text_is_kept() -> None:
    # "🗼" is one code point (two UTF-16 units): "is" starts at index 8.
    labels = clean(spans=[{"response": "a", "start": 8, "end": 10, "category": "redundant"}])
    assert labels.spans == [{"response": "a", "start": 8, "end": 10, "category": "redundant", "text": "is"}]


def test_spans_come_back_sorted_and_stripped_of_unknown_keys() -> None:
    spans = [
        {"response": "b", "start": 0, "end": 4, "category": "irrelevant", "evil": "<script>"},
        {"response": "a", "start": 0, "end": 5, "category": "unverifiable"},
    ]
    assert [(s["response"], s["text"]) for s in clean(spans=spans).spans] == [("a", "Paris"), ("b", "Lyon")]
    assert all("evil" not in s for s in clean(spans=spans).spans)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"spans": [{"response": "a", "start": 5, "end": 5, "category": "redundant"}]},
            "spans[0]: 5-5 is not a non-empty",
        ),
        ({"spans": [{"response": "b", "start": 0, "end": 99, "category": "redundant"}]}, "inside response B (0-8)"),
        (
            {"spans": [{"response": "c", "start": 0, "end": 1, "category": "redundant"}]},
            "spans[0].response: must be a or b",
        ),
        ({"spans": [{"response": "a", "start": 0, "end": 1, "category": "rude"}]}, "spans[0].category: 'rude' is not"),
        ({"spans": [{"response": "a", "start": "0", "end": 1, "category": "rude"}]}, "start and end must be integers"),
        ({"missing": [{"response": "a", "category": "missing_jokes"}]}, "missing[0].category: 'missing_jokes'"),
        ({"missing": [{"response": "a", "category": ["list"]}]}, "missing[0].category: ['list']"),
        ({"spans": [{"response": "a", "start": 0, "end": 1, "category": {"x": 1}}]}, "spans[0].category: {'x': 1}"),
        ({"strength": 4}, "strength: must be an integer from -3 to 3, got 4"),
        ({"strength": None}, "strength: choose which response is better"),
        ({"ratings": {"a": ALL_RATINGS["a"]}}, "ratings.b: rate helpfulness, correctness"),
        ({"ratings": {**ALL_RATINGS, "a": {**ALL_RATINGS["a"], "coherence": 5}}}, "ratings.a.coherence: must be"),
        ({"corrections": {"a": "better text"}}, "corrections: this project does not ask for corrected responses"),
    ],
)
def test_bad_labels_are_refused_with_the_field_named(fields, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LabelError) as raised:
        clean(**fields)
    assert any(message in str(error) for error in raised.value.errors), raised.value.errors


def test_required_justification_and_binary_scale() -> None:
    schema = copy.deepcopy(DEFAULT_SCHEMA)
    schema["preference"].update(scale="binary", justification="required", justification_min_chars=10)
    with pytest.raises(LabelError) as raised:
        labels_clean(schema, Labels(strength=2, ratings=ALL_RATINGS, justification="short"), texts=TEXTS)
    # Errors are data: each names its field's path apart from the message.
    assert raised.value.errors == [
        FieldError("strength", "must be an integer from -1 to 1, got 2"),
        FieldError("justification", "write at least 10 characters (got 5)"),
    ]
