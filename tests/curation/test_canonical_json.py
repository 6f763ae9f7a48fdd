"""canonical_json writes with orjson where that gives json.dumps' text, and falls back to json elsewhere: the
content hash of a version must not depend on which encoder wrote a row."""

import json
import math
import random

import pytest

from curation.services.version_rows import canonical_json, json_loads

REFERENCE = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode

AWKWARD = [
    1e-05,
    -4.7890270264971946e-05,
    1e-4,
    0.0001234,
    1e16,
    1.5e16,
    -0.0,
    0.0,
    1e300,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
    2**63,
    2**70,
    -(2**64),
    "0.0000 in a text",
    "null in a text",
    '\x00\x01\x1f\x7f\u2028\u2029\ufeff/\\"',
    "é中😀",
    "\ud800",
    {"b": 1, "a": 2, "é": 3, "😀": 4, "z": 5, "": 6},
    {1: "a key that is not text"},
    [[[]], {}, None, True, False],
    (1, 2),
]


@pytest.mark.parametrize("value", AWKWARD, ids=repr)
def test_awkward_values_are_written_as_json_writes_them(value) -> None:  # type: ignore[no-untyped-def]
    assert canonical_json({"x": value, "y": [value]}) == REFERENCE({"x": value, "y": [value]})


def test_random_labels_are_written_as_json_writes_them() -> None:
    rng = random.Random(7)
    characters = [chr(code) for code in range(0x300)] + ["\u2028", "é", "中", "😀"]
    for _ in range(20_000):
        text = "".join(rng.choice(characters) for _ in range(rng.randint(0, 10)))
        scale = rng.choice([10.0, 1e-3, 1e-7, 1e-300, 1e15, 1e20, 1e300])
        number = rng.choice([rng.uniform(-scale, scale), round(rng.uniform(-5, 5), 4), 0.0])
        value = {text: [number, rng.randint(-(10**15), 10**15)], "ratings": {"help" + text: number}}
        assert canonical_json(value) == REFERENCE(value)


@pytest.mark.parametrize("text", ['{"a": [1, 2.5, "x"]}', "[18446744073709551616, 1e400]", '"\\u00e9"'])
def test_json_loads_reads_what_json_reads(text: str) -> None:
    assert json_loads(text) == json.loads(text)
