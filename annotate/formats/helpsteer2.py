"""NVIDIA's HelpSteer2 (nvidia/HelpSteer2), JSON lines in either of its two layouts, mixed freely:

- ratings rows, {prompt, response, helpfulness, correctness, coherence, complexity, verbosity} (train.jsonl,
  validation.jsonl), each attribute an integer 0-4. As the dataset card says, consecutive rows share a prompt
  (row 1 with 2, 3 with 4, ...): ratings rows pair up in file order, two at a time, and the two rows of a pair
  must have the same prompt. A pair becomes an item (the first row's response as A) with one annotation by
  "helpsteer2" holding both responses' ratings and no preference.
- HelpSteer2-Preference rows, {split, prompt, response_1, response_2, preference_strength (-3..3, negative:
  response_1 is better), preference_statement, preference_elaboration, three_most_similar_preferences,
  all_preferences_unprocessed} (preference/preference.jsonl). A row becomes an item, response_1 as A, with one
  annotation by "helpsteer2-preference": the strength on the seven-point scale and the statement and
  elaboration as its justification. The individual annotators' preferences are kept in the item's metadata:
  the dataset does not say who gave them, so they cannot become annotations of annotators.

Both layouts identify an item by its prompt and two responses, so importing the ratings file and the
preference file into one project puts both annotations on the same items. Multi-turn prompts
("{user turn 1}\\n<extra_id_1>Assistant\\n{assistant turn 1}\\n<extra_id_1>User\\n{user turn 2}") are split into
chat turns. The "disagreements" file (a list of ratings per attribute, annotators not named) is not read.
"""

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .core import (
    ImportFormatError,
    PairRecord,
    PriorAnnotation,
    Record,
    Turn,
    integer,
    json_type,
    optional_text,
    text,
)

ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
RATINGS_ANNOTATOR = "helpsteer2"
PREFERENCE_ANNOTATOR = "helpsteer2-preference"
TURN_MARK = "<extra_id_1>"
TURN_ROLES = {"User": "user", "Assistant": "assistant"}
# Fields of a preference row kept in the item's metadata, as they are.
PREFERENCE_EXTRAS = ("split", "three_most_similar_preferences", "all_preferences_unprocessed")


@dataclass(frozen=True)
class _Rated:
    line: int
    prompt: str
    response: str
    ratings: dict[str, int]


def parse_helpsteer2(objects: Iterator[tuple[int, dict[str, Any]]]) -> Iterator[Record]:
    waiting: _Rated | None = None  # the first row of a ratings pair, until its second comes
    for line, obj in objects:
        if "response_1" in obj or "preference_strength" in obj:
            if waiting is not None:
                raise _unpaired(waiting)
            yield _preference(obj, line)
            continue
        row = _rated(obj, line)
        if waiting is None:
            waiting = row
            continue
        if row.prompt != waiting.prompt:
            raise ImportFormatError(
                f"the prompt differs from line {waiting.line}'s; ratings rows pair up in order (1 with 2, 3 with 4, "
                "...) and the two rows of a pair must have the same prompt"
            )
        yield _pair(waiting, row)
        waiting = None
    if waiting is not None:
        raise _unpaired(waiting)


def _unpaired(row: _Rated) -> ImportFormatError:
    return ImportFormatError(
        "this ratings row has no second row with the same prompt after it (ratings rows come in pairs)",
        line=row.line,
    )


def _rated(obj: dict[str, Any], line: int) -> _Rated:
    ratings = {}
    for name in ATTRIBUTES:
        if isinstance(obj.get(name), list):
            raise ImportFormatError(
                f"field '{name}' is a list (HelpSteer2's disagreements file, one rating per annotator); "
                "import the ratings file (train.jsonl, validation.jsonl) instead"
            )
        ratings[name] = integer(obj, name, range(5))
    return _Rated(line, text(obj, "prompt"), text(obj, "response", allow_empty=True), ratings)


def _pair(first: _Rated, second: _Rated) -> PairRecord:
    return PairRecord(
        line=first.line,
        prompt=prompt_turns(first.prompt),
        response_a=first.response,
        response_b=second.response,
        metadata={"lines": [first.line, second.line]},
        source="helpsteer2",
        annotations=(PriorAnnotation(RATINGS_ANNOTATOR, ratings={"a": first.ratings, "b": second.ratings}),),
    )


def _preference(obj: dict[str, Any], line: int) -> PairRecord:
    strength = integer(obj, "preference_strength", range(-3, 4))
    parts = [optional_text(obj, name).strip() for name in ("preference_statement", "preference_elaboration")]
    for name in PREFERENCE_EXTRAS[1:]:
        if obj.get(name) is not None and not isinstance(obj[name], list):
            raise ImportFormatError(f"field '{name}' must be a list, got {json_type(obj[name])}")
    annotation = PriorAnnotation(
        PREFERENCE_ANNOTATOR,
        strength=strength,
        scale="seven",
        justification="\n\n".join(part for part in parts if part),
        raw=strength,
    )
    return PairRecord(
        line=line,
        prompt=prompt_turns(text(obj, "prompt")),
        response_a=text(obj, "response_1", allow_empty=True),
        response_b=text(obj, "response_2", allow_empty=True),
        label=(strength > 0) - (strength < 0),
        metadata={name: obj[name] for name in PREFERENCE_EXTRAS if obj.get(name) is not None},
        source="helpsteer2-preference",
        annotations=(annotation,),
    )


def prompt_turns(prompt: str) -> list[Turn]:
    """HelpSteer2's prompt text as chat turns; a prompt whose markers do not read as turns stays one user turn."""
    first, *rest = prompt.split(TURN_MARK)
    turns = [{"role": "user", "content": first.removesuffix("\n")}]
    for part in rest:
        head, _, body = part.partition("\n")
        role = TURN_ROLES.get(head.strip())
        if role is None:
            return [{"role": "user", "content": prompt}]
        turns.append({"role": role, "content": body.removesuffix("\n")})
    return turns
