"""Detecting an import file's format from its first records: each format from a generated file, gzip too, and a
file that parses as none names the likely ones."""

import gzip
import io
import json
from pathlib import Path
from typing import Any

import pytest

from annotate.formats import ImportFormatError, format_detect
from tests.annotate.layouts import (
    fg_record,
    oasst_tree,
    pandalm_record,
    preference_row,
    rating_row,
    write_json,
    write_jsonl,
)


def hh(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if n % 2 == 0 else 'Assistant'}: {turn}" for n, turn in enumerate(turns))


def trl_row(n: int) -> dict[str, Any]:
    return {"prompt": f"Question {n}?", "chosen": f"Good answer {n}.", "rejected": f"Bad answer {n}."}


def trl_conversation_row(n: int) -> dict[str, Any]:
    user = {"role": "user", "content": f"Question {n}?"}
    return {
        "chosen": [user, {"role": "assistant", "content": f"Good {n}."}],
        "rejected": [user, {"role": "assistant", "content": f"Bad {n}."}],
    }


def hh_row(n: int) -> dict[str, Any]:
    return {"chosen": hh(f"Question {n}?", f"Good {n}."), "rejected": hh(f"Question {n}?", f"Bad {n}.")}


def pairs_row(n: int) -> dict[str, Any]:
    return {"prompt": f"Question {n}?", "response_a": f"A {n}.", "response_b": f"B {n}.", "label": 1}


def ratings_rows(n: int) -> list[dict[str, Any]]:
    rows = []
    for k in range(n):
        rows += [rating_row(f"Prompt {k}", f"First {k}", 3), rating_row(f"Prompt {k}", f"Second {k}", 1)]
    return rows


LINES = {
    "trl": [trl_row(n) for n in range(10)],
    "trl-conversations": [trl_conversation_row(n) for n in range(10)],
    "hh-rlhf": [hh_row(n) for n in range(10)],
    "pairs": [pairs_row(n) for n in range(10)],
    "oasst": [oasst_tree()],
    "helpsteer2": ratings_rows(5),
    "helpsteer2-preference": [preference_row(f"Prompt {n}", f"One {n}", f"Two {n}", -2) for n in range(3)],
}
ARRAYS = {
    "pandalm": [pandalm_record(n) for n in range(10)],
    "finegrainedrlhf": [fg_record(n) for n in range(10)],
}


def detect(path: Path) -> str:
    with path.open("rb") as raw:
        found = format_detect(raw)
        assert raw.tell() == 0
    return found.format


@pytest.mark.parametrize("layout", list(LINES))
def test_it_detects_each_json_lines_format(tmp_path, layout):
    path = write_jsonl(tmp_path / "rows.jsonl", LINES[layout])
    assert detect(path) == layout.split("-conversations")[0].removesuffix("-preference")


@pytest.mark.parametrize("fmt", list(ARRAYS))
@pytest.mark.parametrize("gz", [False, True])
def test_it_detects_each_json_array_format_plain_or_gzip(tmp_path, fmt, gz):
    assert detect(write_json(tmp_path / "data.json", ARRAYS[fmt], gz=gz)) == fmt


def test_it_detects_gzip_json_lines_by_content(tmp_path):
    path = tmp_path / "rows.bin"
    path.write_bytes(gzip.compress("".join(json.dumps(row) + "\n" for row in LINES["hh-rlhf"]).encode()))
    assert detect(path) == "hh-rlhf"


def test_it_reads_only_the_first_records():
    # A bad line far down does not change what the first records say; the import itself reports it later.
    rows = [json.dumps(pairs_row(n)) for n in range(10)] + ["{not json"]
    assert format_detect(io.BytesIO("\n".join(rows).encode())).format == "pairs"


def test_an_array_that_parses_as_neither_names_pandalm_and_finegrainedrlhf(tmp_path):
    path = write_json(tmp_path / "data.json", [{"instruction": "Hi", "response1": "A", "response2": "B"}])
    with pytest.raises(ImportFormatError) as caught:
        detect(path)
    message = str(caught.value)
    assert "this looks like a JSON array: PandaLM" in message
    assert "annotator1" in message  # the reason PandaLM's parser gave


def test_an_array_without_telling_fields_names_every_array_format(tmp_path):
    with pytest.raises(ImportFormatError, match=r"a JSON array: PandaLM or FineGrainedRLHF\?"):
        detect(write_json(tmp_path / "data.json", [{"text": "hello"}]))


def test_json_lines_that_parse_as_none_name_the_closest(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "Q", "response_a": "A"}])
    with pytest.raises(ImportFormatError, match=r"this looks like JSON lines: pairs\b.*response_b"):
        detect(path)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"  \n ", "the file is empty"),
        (b"hello", "neither JSON lines"),
        (b"[]", "no records"),
    ],
)
def test_it_refuses_what_is_no_json_at_all(data, message):
    with pytest.raises(ImportFormatError, match=message):
        format_detect(io.BytesIO(data))
