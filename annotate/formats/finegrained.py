"""Fine-Grained RLHF's qa-feedback files (allenai/FineGrainedRLHF, tasks/qa_feedback/data/*_feedback.json).

One JSON array; each record has a question, retrieved passages, four model predictions, fine-grained feedback
on "prediction 1" and six pairwise preferences among the four. A record becomes a group of the four predictions
with all six pairs as items, whatever the project's pair mode: the preferences cover every pair, and a pair
left out would drop its label.

- The question is the user turn; the passages become the item's context, numbered as the feedback cites them
  (passage_id from 1; sentence_id indexes the passage's list, whose entry 0 is its title).
- The six preferences (1v2, 1v3, 1v4, 2v3, 2v4, 3v4; 1: the first is preferred, 2: the second, 0: neither)
  become binary annotations (-1, +1, 0) by "finegrainedrlhf-preference" on the six pair items.
- The feedback (error spans, missing information, the corrected prediction) becomes one annotation by
  "finegrainedrlhf-feedback" on the pair "prediction 1" vs "prediction 2", prediction 1 being response A.
  Span offsets are Python character offsets into "prediction 1", as Concord stores them: checked on the dev
  file, all 1373 spans lie inside the text and start and end at word boundaries, also in the 50 predictions
  with non-ASCII characters (where byte offsets would drift), so they are kept as they are.
"""

import itertools
import json
from typing import Any

from .core import (
    GroupRecord,
    ImportFormatError,
    PriorAnnotation,
    Response,
    json_type,
    require,
    shown,
    span_check,
    text,
)

PREDICTIONS = ("prediction 1", "prediction 2", "prediction 3", "prediction 4")
# The source's order of its six preferences is exactly this: (0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3).
PAIRS = tuple(itertools.combinations(range(len(PREDICTIONS)), 2))
PREFERENCE_STRENGTHS = {1: -1, 2: 1, 0: 0}
PREFERENCE_ANNOTATOR = "finegrainedrlhf-preference"
FEEDBACK_ANNOTATOR = "finegrainedrlhf-feedback"
# Error types to the default schema's span categories and missing-information kinds.
SPAN_CATEGORIES = {
    "Irrelevant": "irrelevant",
    "Redundant": "redundant",
    "Incoherent": "incoherent",
    "Wrong-Grounding": "wrong_grounding",
    "Unverifiable": "unverifiable",
}
MISSING_KINDS = {
    "Missing-Answer": "missing_answer",
    "Missing-Major-Auxiliary": "missing_major",
    "Missing-Minor-Auxiliary": "missing_minor",
}


def parse_finegrained(obj: dict[str, Any], line: int) -> GroupRecord:
    responses = tuple(Response(key=name, text=text(obj, name, allow_empty=True)) for name in PREDICTIONS)
    pair_annotations: dict[tuple[int, int], tuple[PriorAnnotation, ...]] = {
        pair: (PriorAnnotation(PREFERENCE_ANNOTATOR, strength=PREFERENCE_STRENGTHS[value], scale="binary", raw=value),)
        for pair, value in zip(PAIRS, _preferences(obj), strict=True)
    }
    pair_annotations[PAIRS[0]] += (_feedback(obj, responses[0].text),)
    gold = obj.get("gold")
    return GroupRecord(
        line=line,
        prompt=[{"role": "user", "content": text(obj, "question")}],
        context=_context(obj),
        responses=responses,
        pairs=PAIRS,
        pair_annotations=pair_annotations,
        label_annotator=PREFERENCE_ANNOTATOR,
        metadata={"gold": gold} if isinstance(gold, str) else {},
        source="finegrainedrlhf",
    )


def _context(obj: dict[str, Any]) -> str:
    passages = obj.get("passages") or []
    if not isinstance(passages, list):
        raise ImportFormatError(f"field 'passages' must be a list of passages, got {json_type(passages)}")
    blocks = []
    for p, passage in enumerate(passages, start=1):
        if not (isinstance(passage, list) and passage and all(isinstance(s, str) for s in passage)):
            raise ImportFormatError(f"field 'passages' entry {p} must be a list of strings (a title, then sentences)")
        title, *sentences = passage
        lines = [f"Passage {p}: {title}"] + [f"[{n}] {sentence}" for n, sentence in enumerate(sentences, start=1)]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _preferences(obj: dict[str, Any]) -> list[int]:
    value = require(obj, "preference")
    if (
        not isinstance(value, list)
        or len(value) != len(PAIRS)
        or not all(isinstance(v, int) and not isinstance(v, bool) and v in PREFERENCE_STRENGTHS for v in value)
    ):
        raise ImportFormatError(
            f"field 'preference' must be a list of {len(PAIRS)} labels 0, 1 or 2, got {shown(value)}"
        )
    return value


def _feedback(obj: dict[str, Any], prediction: str) -> PriorAnnotation:
    feedback = require(obj, "feedback")
    if not isinstance(feedback, dict):
        raise ImportFormatError(f"field 'feedback' must be an object, got {json_type(feedback)}")
    spans = [_span(entry, n, prediction) for n, entry in enumerate(_entries(feedback, "errors"))]
    missing = [_missing(entry, n) for n, entry in enumerate(_entries(feedback, "missing-info"))]
    corrected = feedback.get("corrected-prediction") or ""
    if not isinstance(corrected, str):
        raise ImportFormatError(f"field 'feedback' corrected-prediction must be a string, got {json_type(corrected)}")
    return PriorAnnotation(
        FEEDBACK_ANNOTATOR,
        spans=sorted(spans, key=lambda s: (s["start"], s["end"], s["category"])),
        missing=missing,
        corrections={"a": corrected} if corrected else {},
    )


def _entries(feedback: dict[str, Any], name: str) -> list[dict[str, Any]]:
    entries = feedback.get(name) or []
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise ImportFormatError(f"field 'feedback' {name} must be a list of objects")
    return entries


def _span(entry: dict[str, Any], n: int, prediction: str) -> dict[str, Any]:
    where = f"field 'feedback' errors[{n}]"
    kind = entry.get("error type")
    if kind not in SPAN_CATEGORIES:
        raise ImportFormatError(f"{where}: unknown error type {kind!r}; expected one of {', '.join(SPAN_CATEGORIES)}")
    start, end = span_check(where, entry.get("start"), entry.get("end"), "prediction 1", len(prediction))
    span: dict[str, Any] = {
        "response": "a",
        "start": start,
        "end": end,
        "category": SPAN_CATEGORIES[kind],
        "text": prediction[start:end],
    }
    explanation = entry.get("explanation")
    if isinstance(explanation, str) and explanation:
        # Redundant: the earlier text this span repeats. Wrong-Grounding: '{"passage_id":2,"sentence_id":[4]}',
        # the sentences it contradicts, also kept as keys of their own.
        span["explanation"] = explanation
        span.update(_grounding(explanation))
    return span


def _grounding(explanation: str) -> dict[str, Any]:
    try:
        cited = json.loads(explanation)
    except ValueError:
        return {}
    if not isinstance(cited, dict):
        return {}
    return {key: cited[key] for key in ("passage_id", "sentence_id") if key in cited}


def _missing(entry: dict[str, Any], n: int) -> dict[str, Any]:
    kind = entry.get("error type")
    if kind not in MISSING_KINDS:
        expected = ", ".join(MISSING_KINDS)
        raise ImportFormatError(
            f"field 'feedback' missing-info[{n}]: unknown error type {kind!r}; expected one of {expected}"
        )
    cited = {key: entry[key] for key in ("passage_id", "sentence_id") if key in entry}
    return {"response": "a", "category": MISSING_KINDS[kind], **cited}
