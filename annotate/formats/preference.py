"""Pairwise preference rows: TRL, Anthropic HH-RLHF and Concord's own pairs, one JSON object per line."""

import json
import re
from typing import Any

from .core import (
    ImportFormatError,
    PairRecord,
    PreferenceRecord,
    Turn,
    messages,
    optional_fields,
    prompt_field,
    require,
    text,
)

LABELS: dict[str, int] = {"a": -1, "tie": 0, "b": 1}


def _shared_prompt(chosen: list[Turn], rejected: list[Turn], *, unit: str) -> list[Turn]:
    """The turns both conversations share before their final assistant turn, which is all they may differ in."""
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant":
            raise ImportFormatError(f"field '{name}' must end with an assistant {unit}")
        if len(turns) < 2:
            raise ImportFormatError(f"field '{name}' has no {unit}s before its final assistant {unit}")
    if chosen[:-1] != rejected[:-1]:
        shorter = min(len(chosen), len(rejected)) - 1
        at = next(
            (n for n, (c, r) in enumerate(zip(chosen[:-1], rejected[:-1], strict=False), 1) if c != r), shorter + 1
        )
        raise ImportFormatError(
            f"fields 'chosen' and 'rejected' must share all {unit}s but the final assistant {unit} "
            f"(they differ at {unit} {at})"
        )
    return chosen[:-1]


def parse_trl(obj: dict[str, Any], line: int) -> PreferenceRecord:
    if "prompt" in obj:
        prompt = prompt_field(obj)
        chosen, rejected = _completion(obj, "chosen"), _completion(obj, "rejected")
    else:
        prompt, chosen, rejected = _implicit_prompt(obj)
    return PreferenceRecord(line=line, prompt=prompt, chosen=chosen, rejected=rejected, **optional_fields(obj))


def _completion(obj: dict[str, Any], name: str) -> str:
    # An empty reply is allowed: in real data (HH-RLHF and TRL's conversions of it) saying nothing is
    # sometimes the preferred response.
    value = require(obj, name)
    if isinstance(value, str):
        return value
    turns = messages(value, name)
    if len(turns) != 1 or turns[0]["role"] != "assistant":
        raise ImportFormatError(f"field '{name}' must be a string or a list with one assistant message")
    return turns[0]["content"]


def _implicit_prompt(obj: dict[str, Any]) -> tuple[list[Turn], str, str]:
    chosen, rejected = require(obj, "chosen"), require(obj, "rejected")
    if isinstance(chosen, str) or isinstance(rejected, str):
        raise ImportFormatError(
            "field 'prompt' is missing (it may only be left out when 'chosen' and 'rejected' are conversations)"
        )
    chosen_turns, rejected_turns = messages(chosen, "chosen"), messages(rejected, "rejected")
    prompt = _shared_prompt(chosen_turns, rejected_turns, unit="message")
    return prompt, chosen_turns[-1]["content"], rejected_turns[-1]["content"]


_HH_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_HH_ROLES = {"Human": "user", "Assistant": "assistant"}


def _hh_turns(obj: dict[str, Any], name: str) -> list[Turn]:
    """Split a transcript into turns.

    Two quirks of the real data (harmless-base test: 2312 rows) are smoothed over, both harmless:
    - some replies contain "\\n\\nAssistant:" again (the model went on talking), which would look like two
      assistant turns in a row; a repeated marker is kept as text of the turn it is in, so the reply is whole;
    - turns carry stray spaces ("Assistant:  Hi"), so each turn is stripped before transcripts are compared.
    An empty final reply is kept: 4 rows prefer saying nothing to a harmful answer.
    """
    transcript = text(obj, name)
    markers = list(_HH_MARKER.finditer(transcript))
    if not markers:
        raise ImportFormatError(f"field '{name}' has no '\\n\\nHuman:' or '\\n\\nAssistant:' turns")
    if transcript[: markers[0].start()].strip():
        raise ImportFormatError(f"field '{name}' has text before its first 'Human:' turn")
    starts = [m for i, m in enumerate(markers) if i == 0 or m.group(1) != markers[i - 1].group(1)]
    ends = [m.start() for m in starts[1:]] + [len(transcript)]
    return [
        {"role": _HH_ROLES[m.group(1)], "content": transcript[m.end() : end].strip()}
        for m, end in zip(starts, ends, strict=True)
    ]


def parse_hh(obj: dict[str, Any], line: int) -> PreferenceRecord:
    chosen, rejected = _hh_turns(obj, "chosen"), _hh_turns(obj, "rejected")
    prompt = _shared_prompt(chosen, rejected, unit="turn")
    optional = optional_fields(obj)
    optional["source"] = optional["source"] or "hh-rlhf"
    return PreferenceRecord(
        line=line, prompt=prompt, chosen=chosen[-1]["content"], rejected=rejected[-1]["content"], **optional
    )


def parse_pairs(obj: dict[str, Any], line: int) -> PairRecord:
    return PairRecord(
        line=line,
        prompt=prompt_field(obj),
        response_a=text(obj, "response_a"),
        response_b=text(obj, "response_b"),
        label=_label(obj),
        **optional_fields(obj),
    )


def _label(obj: dict[str, Any]) -> int | None:
    value = obj.get("label")
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in LABELS:
        return LABELS[value.strip().lower()]
    if isinstance(value, int) and not isinstance(value, bool) and value in (-1, 0, 1):
        return value
    shown = json.dumps(value, ensure_ascii=False)[:40]
    raise ImportFormatError(f'field \'label\' must be one of "a", "b", "tie", -1, 0 or 1, got {shown}')
