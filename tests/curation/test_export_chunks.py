"""Exports read a frozen version a chunk of positions at a time and write each chunk with one call; every format
carries every row, in position order, whatever the chunking, and Parquet keeps its shape."""

import json

import pyarrow.parquet as pq
import pytest
from django.db import connection

from curation.models import DatasetRow
from curation.services import version_exports, version_parquet
from curation.services.version_exports import PROMPT_JSON, trl_line, trl_row, version_export, version_rows
from curation.services.version_rows import PlannedRow
from curation.services.versions import dataset_version_create, dataset_version_freeze
from tests.annotate.factories import ItemFactory, ProjectFactory

pytestmark = pytest.mark.django_db

ODD_TEXT = 'Said "hi"\\ \x01\x1f\x7f\n\t — 日本語 \u2028 🙂'


@pytest.fixture
def version():  # type: ignore[no-untyped-def]
    """Seven rows with prompts of every shape a turn may have, frozen from rows given as a campaign gives them."""
    project = ProjectFactory()
    prompts = [
        [{"role": "system", "content": ODD_TEXT}, {"role": "user", "content": "q0"}],
        [{"role": "user", "content": "q1", "name": "bob", "extra": {"x": [1, 2]}}],  # keys besides role, content
        [{"content": "no role"}],
        [],
    ]
    items = [ItemFactory(project=project, prompt=prompts[n % 4]) for n in range(7)]

    def rows():  # type: ignore[no-untyped-def]
        for n, item in enumerate(items):
            labels = {"chosen": {"ratings": {"b": 1.5, "a": n}, "spans": [{"text": ODD_TEXT}]}, "rejected": {}}
            fields = {"item_id": item.pk, "split": "train" if n % 3 else "test", "prompt": item.prompt}
            fields |= {"context": ODD_TEXT if n == 1 else "", "chosen": f"{ODD_TEXT} {n}", "rejected": f"r{n}"}
            fields |= {"margin": 1.0 if n == 0 else n / 7, "weight": 0.5, "provenance": "ai_accepted"}
            fields |= {"source": "=SUM(A1)", "annotation_ids": [n, n + 100], "labels": labels}
            yield PlannedRow(fields, "gold", 1.0, set())

    draft = dataset_version_create(name="v", projects=[project], filters={}, created_by=None)
    return dataset_version_freeze(version=draft, rows=rows)


def stored(version) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    return list(DatasetRow.objects.filter(version=version).order_by("position").values(*DatasetRow.CONTENT_FIELDS))


@pytest.mark.parametrize("chunk", [2, 3, 2000])
def test_version_rows_are_the_stored_rows_in_order_whatever_the_chunk(version, monkeypatch, chunk):
    monkeypatch.setattr(version_exports, "ROW_CHUNK", chunk)
    assert list(version_rows(version=version)) == stored(version)
    prompts = [row[PROMPT_JSON] for row in version_rows(version=version, fields=(PROMPT_JSON,))]
    assert [json.loads(prompt) for prompt in prompts] == [row["prompt"] for row in stored(version)]


@pytest.mark.parametrize("chunk", [2, 2000])
def test_text_formats_carry_every_row_in_order(version, monkeypatch, tmp_path, chunk):
    monkeypatch.setattr(version_exports, "ROW_CHUNK", chunk)
    rows = stored(version)
    assert version_export(version=version, format="trl", path=tmp_path / "v.jsonl") == 7
    text = (tmp_path / "v.jsonl").read_text(encoding="utf-8")
    lines = text.split("\n")  # not splitlines(): U+2028 is a line boundary to Python, and raw text in JSON
    assert lines.pop() == ""
    assert [json.loads(line) for line in lines] == [trl_row(row) for row in rows]
    assert lines[0].endswith('"margin": 1.0, "split": "test"}')  # a whole margin stays a float
    # The database's escaping of the responses is Python's, byte for byte.
    assert text == "".join(trl_line(row) for row in version_rows(version=version))
    assert version_export(version=version, format="fine", path=tmp_path / "v.fine.jsonl") == 7
    fine = (tmp_path / "v.fine.jsonl").read_text(encoding="utf-8")
    assert fine == "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    assert version_export(version=version, format="csv", path=tmp_path / "v.csv") == 7
    assert (tmp_path / "v.csv").read_text(encoding="utf-8").count("'=SUM(A1)") == 7


@pytest.mark.parametrize("group", [3, 10_000])
def test_parquet_has_the_rows_in_the_shape_trl_reads(version, monkeypatch, tmp_path, group):
    monkeypatch.setattr(version_parquet, "ROW_GROUP", group)
    path = tmp_path / "v.parquet"
    assert version_export(version=version, format="parquet", path=path) == 7
    parquet = pq.ParquetFile(path)
    assert parquet.schema_arrow == version_parquet.SCHEMA
    assert parquet.metadata.num_row_groups == -(-7 // group)
    rows = stored(version)
    for row, read in zip(rows, parquet.read().to_pylist(), strict=True):
        turns = [{"role": turn.get("role"), "content": turn.get("content")} for turn in row["prompt"]]
        assert read["prompt"] == turns
        assert read["chosen"] == [{"role": "assistant", "content": row["chosen"]}]
        assert read["rejected"] == [{"role": "assistant", "content": row["rejected"]}]
        assert json.loads(read["labels"]) == row["labels"]
        fields = ("position", "item_id", "split", "context", "margin", "weight", "provenance", "source")
        assert {name: read[name] for name in (*fields, "annotation_ids")} == {
            name: row[name] for name in (*fields, "annotation_ids")
        }


def test_parquet_reports_its_progress_by_row_group(version, monkeypatch, tmp_path):
    monkeypatch.setattr(version_parquet, "ROW_GROUP", 2)
    monkeypatch.setattr(version_exports, "ROW_CHUNK", 2)
    seen: list[int] = []
    version_export(version=version, format="parquet", path=tmp_path / "v.parquet", progress=seen.append)
    assert seen == [2, 4, 6]


def test_the_database_escapes_text_as_json_dumps_does():
    """Every character but NUL (which PostgreSQL text cannot hold) and the lone surrogates (which UTF-8 cannot)."""
    code_points = [*range(1, 0xD800), *range(0xE000, 0x10000), 0x10000, 0x1F642, 0x10FFFF]
    texts = ["".join(chr(c) for c in code_points[start : start + 1000]) for start in range(0, len(code_points), 1000)]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT to_json(text)::text FROM unnest(%s::text[]) WITH ORDINALITY AS given(text, n) ORDER BY n", [texts]
        )
        escaped = [row[0] for row in cursor.fetchall()]
    assert escaped == [json.dumps(text, ensure_ascii=False) for text in texts]
