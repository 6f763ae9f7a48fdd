"""PandaLM's human-annotated test set (WeOpenML/PandaLM, data/testset-v1.json): one JSON array.

Each record compares two models' responses to an instruction (with an optional input), labelled by three
annotators: 1 when response1 is better, 2 when response2 is, 0 for a tie. response1 and response2 become A and
B in the source's order, the three labels binary annotations (-1, +1, 0) by "pandalm-annotator1" to "3", and
the majority label, where there is one, the item's source label. idx, cmp_key and motivation_app are kept.

The test set holds the same two texts more than once under different model pairings (136 of 999 records in
testset-v1: models that answered alike), each annotated on its own; idx is part of the item's identity, so
they stay separate items.
"""

from collections import Counter
from typing import Any

from .core import (
    ImportFormatError,
    PairRecord,
    PriorAnnotation,
    external_id,
    integer,
    json_type,
    optional_text,
    text,
)

ANNOTATORS = ("annotator1", "annotator2", "annotator3")
STRENGTHS = {1: -1, 2: 1, 0: 0}


def parse_pandalm(obj: dict[str, Any], line: int) -> PairRecord:
    # One record of testset-v1 (idx 466) has the instruction " " and all of its prompt in the input.
    parts = [text(obj, "instruction", allow_empty=True), optional_text(obj, "input")]
    content = "\n\n".join(part for part in parts if part.strip())
    if not content:
        raise ImportFormatError("fields 'instruction' and 'input' are both empty")
    coerced: list[str] = []
    response_a, response_b = _response(obj, "response1", coerced), _response(obj, "response2", coerced)
    labels = {name: integer(obj, name, (0, 1, 2)) for name in ANNOTATORS}
    annotations = tuple(
        PriorAnnotation(f"pandalm-{name}", strength=STRENGTHS[label], scale="binary", raw=label)
        for name, label in labels.items()
    )
    idx = external_id(obj, "idx")
    metadata: dict[str, Any] = {key: obj[key] for key in ("idx", "cmp_key", "motivation_app") if key in obj}
    if coerced:
        metadata["coerced_to_text"] = coerced
    return PairRecord(
        line=line,
        prompt=[{"role": "user", "content": content}],
        response_a=response_a,
        response_b=response_b,
        label=_majority([STRENGTHS[label] for label in labels.values()]),
        external_id=idx,
        metadata=metadata,
        source="pandalm",
        annotations=annotations,
        identity=f"pandalm:{idx or f'record {line}'}",
    )


def _response(obj: dict[str, Any], name: str, coerced: list[str]) -> str:
    value = obj.get(name)
    # testset-v1 has JSON true for 6 responses (ids 157-164, all to "Verify the correctness of the given
    # statement"): the models answered "True", and whatever wrote the file turned that into a boolean.
    if isinstance(value, bool):
        coerced.append(name)
        return str(value)
    if value is not None and not isinstance(value, str):
        raise ImportFormatError(f"field '{name}' must be a string, got {json_type(value)}")
    # Empty responses are kept (54 in testset-v1): a model that said nothing was still compared.
    return text(obj, name, allow_empty=True)


def _majority(strengths: list[int]) -> int | None:
    strength, votes = Counter(strengths).most_common(1)[0]
    return strength if votes * 2 > len(strengths) else None
