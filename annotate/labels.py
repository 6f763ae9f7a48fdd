"""Label schemas and the labels annotators give under them. Pure Python: no Django import.

A schema turns on and configures what annotators label for a pair of responses:

    {
      "preference": {"enabled": true, "scale": "seven" | "binary",
                     "justification": "optional" | "required", "justification_min_chars": 0},
      "attributes": [{"name": "helpfulness", "description": "...", "min": 0, "max": 4}, ...],
      "spans": {"enabled": true,
                "categories": [{"name": "irrelevant", "color": "#f4a261", "description": "..."}, ...],
                "missing": [{"name": "missing_answer", "description": "..."}, ...]},
      "correction": {"enabled": false}
    }

Errors name where they are, as a path into the JSON: "attributes[2].max: must be an integer".
"""

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from annotate.text import unstorable
from concord.errors import FieldError, ServiceError

SIDES = ("a", "b")
SCALES = {"seven": (-3, 3), "binary": (-1, 1)}
SEVEN_LABELS = {
    -3: "A is much better",
    -2: "A is better",
    -1: "A is slightly better",
    0: "About the same",
    1: "B is slightly better",
    2: "B is better",
    3: "B is much better",
}
BINARY_LABELS = {-1: "A is better", 0: "Tie", 1: "B is better"}
NAME_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
COLOR_PATTERN = re.compile(r"^#[0-9a-fA-F]{6}$")
MAX_ATTRIBUTES = 20
MAX_CATEGORIES = 20
MAX_DESCRIPTION_CHARS = 500
MAX_JUSTIFICATION_CHARS = 10_000
MAX_SPANS_PER_RESPONSE = 200
MAX_CORRECTION_CHARS = 100_000

DEFAULT_SCHEMA: dict[str, Any] = {
    "preference": {"enabled": True, "scale": "seven", "justification": "optional", "justification_min_chars": 0},
    # HelpSteer2's five attributes, each 0-4.
    "attributes": [
        {
            "name": "helpfulness",
            "description": "Overall helpfulness of the response to the prompt.",
            "min": 0,
            "max": 4,
        },
        {"name": "correctness", "description": "Inclusion of all pertinent facts without errors.", "min": 0, "max": 4},
        {"name": "coherence", "description": "Consistency and clarity of expression.", "min": 0, "max": 4},
        {
            "name": "complexity",
            "description": "Intellectual depth required to write the response (0: basic language, "
            "4: domain expertise).",
            "min": 0,
            "max": 4,
        },
        {
            "name": "verbosity",
            "description": "Amount of detail relative to what the prompt asks for (0: terse, 4: verbose).",
            "min": 0,
            "max": 4,
        },
    ],
    # Fine-Grained RLHF's error categories, plus its missing-information kinds (not tied to a span).
    "spans": {
        "enabled": True,
        "categories": [
            {"name": "irrelevant", "color": "#f4a261", "description": "Not relevant to the question."},
            {"name": "redundant", "color": "#e9c46a", "description": "Repeats something already said."},
            {"name": "incoherent", "color": "#b5838d", "description": "Contradicts itself or does not make sense."},
            {
                "name": "wrong_grounding",
                "color": "#e76f51",
                "description": "Contradicts or misreads the given context.",
            },
            {"name": "unverifiable", "color": "#8ab17d", "description": "Cannot be checked against the context."},
        ],
        "missing": [
            {"name": "missing_answer", "description": "Leaves out an answer the question asks for."},
            {"name": "missing_major", "description": "Leaves out a major detail that matters."},
            {"name": "missing_minor", "description": "Leaves out a minor, auxiliary detail."},
        ],
    },
    "correction": {"enabled": False},
}


# What Concord asked for before schemas existed, and a preset for pairwise-only projects.
PREFERENCE_ONLY_SCHEMA: dict[str, Any] = {
    "preference": {"enabled": True, "scale": "seven", "justification": "optional", "justification_min_chars": 0},
    "attributes": [],
    "spans": {"enabled": False, "categories": [], "missing": []},
    "correction": {"enabled": False},
}
PRESETS: dict[str, dict[str, Any]] = {
    "HelpSteer2 ratings + Fine-Grained RLHF spans + preference": DEFAULT_SCHEMA,
    "Preference only (seven-point)": PREFERENCE_ONLY_SCHEMA,
    "Preference only (A / B / tie)": {
        **PREFERENCE_ONLY_SCHEMA,
        "preference": {**PREFERENCE_ONLY_SCHEMA["preference"], "scale": "binary"},
    },
}


class LabelError(ServiceError):
    """Labels or a schema that cannot be accepted. `errors` lists every problem, each with its path."""


# Schemas.


def _check_names(entries: list[Any], path: str, errors: list[FieldError], *, color: bool) -> None:
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{path}[{index}]"
        if not isinstance(entry, Mapping):
            errors.append(FieldError(where, "must be an object"))
            continue
        name = entry.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            errors.append(
                FieldError(f"{where}.name", "must be lower_snake_case, 1-40 characters, starting with a letter")
            )
        elif name in seen:
            errors.append(FieldError(f"{where}.name", f"'{name}' is used twice"))
        else:
            seen.add(name)
        description = entry.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION_CHARS:
            errors.append(
                FieldError(f"{where}.description", f"must be text of at most {MAX_DESCRIPTION_CHARS} characters")
            )
        if color and not (isinstance(entry.get("color"), str) and COLOR_PATTERN.match(entry["color"])):
            errors.append(FieldError(f"{where}.color", "must be a colour like #e76f51"))


def _check_preference(section: Any, errors: list[FieldError]) -> None:
    if not isinstance(section, Mapping):
        errors.append(FieldError("preference", "must be an object"))
        return
    if not isinstance(section.get("enabled"), bool):
        errors.append(FieldError("preference.enabled", "must be true or false"))
    if section.get("scale") not in SCALES:
        errors.append(FieldError("preference.scale", f"must be one of {', '.join(SCALES)}"))
    if section.get("justification") not in ("optional", "required"):
        errors.append(FieldError("preference.justification", "must be 'optional' or 'required'"))
    minimum = section.get("justification_min_chars", 0)
    if not _is_int(minimum) or not 0 <= minimum <= 2000:
        errors.append(FieldError("preference.justification_min_chars", "must be an integer from 0 to 2000"))


def _check_attributes(attributes: Any, errors: list[FieldError]) -> None:
    if not isinstance(attributes, list) or len(attributes) > MAX_ATTRIBUTES:
        errors.append(FieldError("attributes", f"must be a list of at most {MAX_ATTRIBUTES} attributes"))
        return
    _check_names(attributes, "attributes", errors, color=False)
    for index, attribute in enumerate(attributes):
        if not isinstance(attribute, Mapping):
            continue
        low, high = attribute.get("min"), attribute.get("max")
        if not _is_int(low) or not _is_int(high):
            errors.append(FieldError(f"attributes[{index}]", "min and max must be integers"))
        elif not (low < high and high - low <= 10):
            errors.append(
                FieldError(f"attributes[{index}]", "the scale must run upwards over at most 11 points (min < max)")
            )


def _check_spans(section: Any, errors: list[FieldError]) -> None:
    if not isinstance(section, Mapping):
        errors.append(FieldError("spans", "must be an object"))
        return
    if not isinstance(section.get("enabled"), bool):
        errors.append(FieldError("spans.enabled", "must be true or false"))
    for key, color in (("categories", True), ("missing", False)):
        entries = section.get(key, [])
        if not isinstance(entries, list) or len(entries) > MAX_CATEGORIES:
            errors.append(FieldError(f"spans.{key}", f"must be a list of at most {MAX_CATEGORIES} entries"))
        else:
            _check_names(entries, f"spans.{key}", errors, color=color)
    if section.get("enabled") and not section.get("categories") and not section.get("missing"):
        errors.append(FieldError("spans", "enabled, but has neither categories nor missing-information kinds"))


def schema_errors(definition: Any) -> list[FieldError]:
    """Everything wrong with a schema definition; empty when it is valid."""
    if not isinstance(definition, Mapping):
        return [FieldError("", "the schema must be a JSON object")]
    errors: list[FieldError] = []
    unknown = set(definition) - {"preference", "attributes", "spans", "correction"}
    if unknown:
        errors.append(FieldError("", f"unknown sections: {', '.join(sorted(unknown))}"))
    _check_preference(definition.get("preference"), errors)
    _check_attributes(definition.get("attributes"), errors)
    _check_spans(definition.get("spans"), errors)
    correction = definition.get("correction")
    if not isinstance(correction, Mapping) or not isinstance(correction.get("enabled"), bool):
        errors.append(FieldError("correction.enabled", "must be true or false"))
    if not errors and not _asks_for_anything(definition):
        errors.append(
            FieldError("", "the schema asks for nothing: enable a preference, attributes, spans or corrections")
        )
    return errors


def _asks_for_anything(definition: Mapping[str, Any]) -> bool:
    return bool(
        definition["preference"]["enabled"]
        or definition["attributes"]
        or definition["spans"]["enabled"]
        or definition["correction"]["enabled"]
    )


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


# Labels.


@dataclass
class Labels:
    """What one annotator said about one pair, checked against a schema."""

    strength: int | None = None
    justification: str = ""
    ratings: dict[str, dict[str, int]] = field(default_factory=dict)
    spans: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, Any]] = field(default_factory=list)
    corrections: dict[str, str] = field(default_factory=dict)


def strength_labels(definition: Mapping[str, Any]) -> dict[int, str]:
    return SEVEN_LABELS if definition["preference"]["scale"] == "seven" else BINARY_LABELS


def _clean_preference(definition: Mapping[str, Any], labels: Labels, errors: list[FieldError]) -> None:
    preference = definition["preference"]
    if not preference["enabled"]:
        if labels.strength is not None:
            errors.append(FieldError("strength", "this project does not ask for a preference"))
        return
    low, high = SCALES[preference["scale"]]
    if labels.strength is None:
        errors.append(FieldError("strength", "choose which response is better"))
    elif not _is_int(labels.strength) or not low <= labels.strength <= high:
        errors.append(FieldError("strength", f"must be an integer from {low} to {high}, got {labels.strength!r}"))
    text = labels.justification.strip()
    minimum = preference.get("justification_min_chars", 0)
    if preference["justification"] == "required" and not text:
        errors.append(FieldError("justification", "required in this project"))
    elif text and len(text) < minimum:
        errors.append(FieldError("justification", f"write at least {minimum} characters (got {len(text)})"))
    if len(labels.justification) > MAX_JUSTIFICATION_CHARS:
        errors.append(FieldError("justification", f"at most {MAX_JUSTIFICATION_CHARS} characters"))


def ratings_errors(definition: Mapping[str, Any], ratings: Any, *, require_all: bool) -> list[FieldError]:
    """Problems with ratings {"a": {attribute: value}, "b": {...}} under the schema's attributes."""
    attributes = {a["name"]: a for a in definition["attributes"]}
    if not isinstance(ratings, Mapping):
        return [FieldError("ratings", "must be an object keyed by response (a, b)")]
    errors: list[FieldError] = []
    for side, given in ratings.items():
        if side not in SIDES or not isinstance(given, Mapping):
            errors.append(FieldError(f"ratings.{side}", "unknown response (expected a or b)"))
            continue
        for name, value in given.items():
            attribute = attributes.get(name)
            if attribute is None:
                errors.append(FieldError(f"ratings.{side}.{name}", "not an attribute of this project"))
            elif not _is_int(value) or not attribute["min"] <= value <= attribute["max"]:
                errors.append(
                    FieldError(
                        f"ratings.{side}.{name}",
                        f"must be an integer from {attribute['min']} to {attribute['max']}, got {value!r}",
                    )
                )
    for side in SIDES if require_all else ():
        absent = [name for name in attributes if name not in ratings.get(side, {})]
        if absent:
            errors.append(FieldError(f"ratings.{side}", f"rate {', '.join(absent)} for response {side.upper()}"))
    return errors


def _clean_ratings(definition: Mapping[str, Any], labels: Labels, errors: list[FieldError]) -> None:
    errors.extend(ratings_errors(definition, labels.ratings, require_all=True))


def _clean_spans(
    definition: Mapping[str, Any], labels: Labels, texts: Mapping[str, str], errors: list[FieldError]
) -> None:
    section = definition["spans"]
    if not section["enabled"]:
        if labels.spans or labels.missing:
            errors.append(FieldError("spans", "this project does not ask for error spans"))
        return
    categories = {c["name"] for c in section.get("categories", [])}
    for index, span in enumerate(labels.spans if isinstance(labels.spans, list) else [None]):
        where = f"spans[{index}]"
        if not isinstance(span, Mapping):
            errors.append(FieldError(where, "must be an object with response, start, end and category"))
            continue
        side, start, end = span.get("response"), span.get("start"), span.get("end")
        if side not in SIDES:
            errors.append(FieldError(f"{where}.response", "must be a or b"))
            continue
        if not (_is_int(start) and _is_int(end)):
            errors.append(FieldError(where, "start and end must be integers"))
        elif not 0 <= start < end <= len(texts[side]):
            errors.append(
                FieldError(
                    where,
                    f"{start}-{end} is not a non-empty span inside response {side.upper()} (0-{len(texts[side])})",
                )
            )
        category = span.get("category")
        if not isinstance(category, str) or category not in categories:
            errors.append(
                FieldError(f"{where}.category", f"{span.get('category')!r} is not a category of this project")
            )
    for side in SIDES:
        if (
            sum(1 for s in labels.spans if isinstance(s, Mapping) and s.get("response") == side)
            > MAX_SPANS_PER_RESPONSE
        ):
            errors.append(FieldError("spans", f"at most {MAX_SPANS_PER_RESPONSE} spans per response"))
    kinds = {m["name"] for m in section.get("missing", [])}
    for index, entry in enumerate(labels.missing if isinstance(labels.missing, list) else [None]):
        where = f"missing[{index}]"
        if not isinstance(entry, Mapping) or entry.get("response") not in SIDES:
            errors.append(FieldError(where, "must be an object with response a or b and a category"))
        elif not isinstance(entry.get("category"), str) or entry["category"] not in kinds:
            errors.append(
                FieldError(f"{where}.category", f"{entry.get('category')!r} is not a missing-information kind here")
            )


def _clean_corrections(definition: Mapping[str, Any], labels: Labels, errors: list[FieldError]) -> None:
    if not isinstance(labels.corrections, Mapping):
        errors.append(FieldError("corrections", "must be an object keyed by response (a, b)"))
        return
    given = {side: text for side, text in labels.corrections.items() if text}
    if given and not definition["correction"]["enabled"]:
        errors.append(FieldError("corrections", "this project does not ask for corrected responses"))
    for side, text in given.items():
        if side not in SIDES or not isinstance(text, str):
            errors.append(FieldError(f"corrections.{side}", "must be text for response a or b"))
        elif len(text) > MAX_CORRECTION_CHARS:
            errors.append(FieldError(f"corrections.{side}", f"at most {MAX_CORRECTION_CHARS} characters"))
        else:
            errors.extend(_unstorable_errors(f"corrections.{side}", text))


def _unstorable_errors(path: str, text: str) -> list[FieldError]:
    """Text no database column can hold (annotate.text: U+0000, an unpaired surrogate) is refused here, naming the
    field, rather than failing the write."""
    problem = unstorable(text)
    return [FieldError(path, f"holds {problem}, which cannot be stored; remove it")] if problem else []


def labels_clean(definition: Mapping[str, Any], labels: Labels, *, texts: Mapping[str, str]) -> Labels:
    """Labels checked against the schema and the two response texts; LabelError lists every problem."""
    errors: list[FieldError] = []
    _clean_preference(definition, labels, errors)
    _clean_ratings(definition, labels, errors)
    _clean_spans(definition, labels, texts, errors)
    _clean_corrections(definition, labels, errors)
    # Outside _clean_preference: a justification is stored even when the schema asks for no preference.
    errors.extend(_unstorable_errors("justification", labels.justification))
    if errors:
        raise LabelError(errors=errors)
    spans = sorted(
        ({**span, "text": texts[span["response"]][span["start"] : span["end"]]} for span in labels.spans),
        key=lambda s: (s["response"], s["start"], s["end"], s["category"]),
    )
    return Labels(
        strength=labels.strength,
        justification=labels.justification.strip(),
        ratings={side: dict(labels.ratings[side]) for side in SIDES if side in labels.ratings},
        spans=[{k: s[k] for k in ("response", "start", "end", "category", "text")} for s in spans],
        missing=[{"response": m["response"], "category": m["category"]} for m in labels.missing],
        corrections={side: text for side, text in labels.corrections.items() if text},
    )
