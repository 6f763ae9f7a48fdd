"""The fine-grained export (every item with every annotation, JSON lines or Parquet) and TRL margins."""

import gzip
import json
from datetime import datetime
from io import StringIO

import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from annotate.formats.finegrained import MISSING_KINDS, PREFERENCE_STRENGTHS, SPAN_CATEGORIES
from annotate.labels import DEFAULT_SCHEMA
from annotate.services import exports
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, UserFactory
from tests.annotate.layouts import fg_record, pandalm_record, rating_row, run_import, write_json, write_jsonl

PAIR_NAMES = ["1v2", "1v3", "1v4", "2v3", "2v4", "3v4"]


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line]


def export(project, tmp_path, fmt: str, **options) -> list[dict]:  # type: ignore[no-untyped-def]
    """The project exported through the command, read back as a list of records."""
    out = tmp_path / f"items.{fmt}"
    args = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    call_command("export_items", "--project", str(project.pk), "--format", fmt, *args, str(out), stdout=StringIO())
    if fmt == "jsonl":
        return read_jsonl(out.read_text())
    rows = pq.read_table(out).to_pylist()
    for row in rows:  # Parquet keeps maps as (key, value) pairs and free-form keys as JSON text
        for annotation in row["annotations"]:
            annotation["ratings"] = {side: dict(values) for side, values in annotation["ratings"]}
            annotation["corrections"] = dict(annotation["corrections"])
            for entry in annotation["spans"] + annotation["missing"]:
                entry.update(json.loads(entry.pop("extra") or "{}"))
    return rows


def expected_spans(record: dict) -> list[dict]:
    text = record["prediction 1"]
    spans = []
    for error in record["feedback"]["errors"]:
        span = {
            "response": "a",
            "start": error["start"],
            "end": error["end"],
            "category": SPAN_CATEGORIES[error["error type"]],
            "text": text[error["start"] : error["end"]],
        }
        if error["explanation"]:
            span["explanation"] = error["explanation"]
            if error["error type"] == "Wrong-Grounding":
                span.update(json.loads(error["explanation"]))
        spans.append(span)
    return sorted(spans, key=lambda s: (s["start"], s["end"]))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.django_db
def test_finegrainedrlhf_round_trips_through_the_export_field_by_field(tmp_path, fmt):
    project = ProjectFactory(schema=DEFAULT_SCHEMA)
    source = [fg_record(1), fg_record(2, preference=[2, 0, 1, 2, 2, 1])]
    run_import(project, write_json(tmp_path / "dev_feedback.json", source), "finegrainedrlhf")
    rows = export(project, tmp_path, fmt, chunk_size=5)
    assert len(rows) == 12
    for number, record in enumerate(source, start=1):
        pairs = {
            f"{row['group']['response_a_index'] + 1}v{row['group']['response_b_index'] + 1}": row
            for row in rows
            if row["group"]["external_id"] == f"record {number}"
        }
        assert sorted(pairs) == PAIR_NAMES
        for name, value in zip(PAIR_NAMES, record["preference"], strict=True):
            row = pairs[name]
            a, b = (int(side) - 1 for side in name.split("v"))
            assert (row["response_a"], row["response_b"]) == (
                record[f"prediction {a + 1}"],
                record[f"prediction {b + 1}"],
            )
            assert (row["group"]["response_a_key"], row["group"]["response_b_key"]) == (
                f"prediction {a + 1}",
                f"prediction {b + 1}",
            )
            preference = next(x for x in row["annotations"] if x["annotator"] == "imported:finegrainedrlhf-preference")
            assert (preference["origin"], preference["strength"], preference["scale"]) == (
                "imported",
                PREFERENCE_STRENGTHS[value],
                "binary",
            )
        feedback = next(x for x in pairs["1v2"]["annotations"] if x["annotator"] == "imported:finegrainedrlhf-feedback")
        assert feedback["spans"] == expected_spans(record)
        assert feedback["missing"] == [
            {"response": "a", "category": MISSING_KINDS[m["error type"]], **without_type(m)}
            for m in record["feedback"]["missing-info"]
        ]
        assert feedback["corrections"] == {"a": record["feedback"]["corrected-prediction"]}
        assert (feedback["strength"], feedback["scale"], feedback["schema_version"]) == (None, None, 1)
        assert pairs["1v2"]["prompt"] == [{"role": "user", "content": record["question"]}]
        assert "Passage 2: Coffee\n[1] Coffee is a drink." in pairs["1v2"]["context"]


def without_type(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "error type"}


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.django_db
def test_human_annotations_export_with_their_schema_version_and_time(tmp_path, fmt):
    project = ProjectFactory(schema=DEFAULT_SCHEMA)
    item = ItemFactory(project=project, response_a="Paris is in France.", response_b="Lyon.", metadata={"k": [1]})
    spans = [{"response": "a", "start": 0, "end": 5, "category": "irrelevant", "text": "Paris"}]
    ratings = {"a": {"helpfulness": 4}, "b": {"helpfulness": 1}}
    annotator = UserFactory(username="alice")
    AnnotationFactory(
        item=item,
        annotator=annotator,
        strength=-2,
        justification="A is right.",
        ratings=ratings,
        spans=spans,
        missing=[{"response": "b", "category": "missing_answer"}],
        corrections={"b": "Lyon is in France."},
        seconds_spent=12.5,
        schema=project.label_schemas.get(),
    )
    (row,) = export(project, tmp_path, fmt)
    assert (row["item_id"], row["group"], row["source_label"], row["is_gold"]) == (item.pk, None, None, False)
    metadata = row["metadata"] if fmt == "jsonl" else json.loads(row["metadata"])
    assert metadata == {"k": [1]}
    (annotation,) = row["annotations"]
    created = annotation.pop("created_at")
    created = datetime.fromisoformat(created) if isinstance(created, str) else created
    assert created.tzinfo is not None
    assert annotation == {
        "annotator": "alice",
        "origin": "human",
        "schema_version": 1,
        "scale": "seven",
        "strength": -2,
        "justification": "A is right.",
        "ratings": ratings,
        "spans": spans,
        "missing": [{"response": "b", "category": "missing_answer"}],
        "corrections": {"b": "Lyon is in France."},
        "seconds_spent": 12.5,
    }


@pytest.mark.django_db
def test_the_export_streams_in_chunks_and_row_groups(tmp_path):
    project = ProjectFactory()
    items = [ItemFactory(project=project) for _ in range(7)]
    for item in items:
        AnnotationFactory(item=item, strength=1)
        AnnotationFactory(item=item, strength=-1)
    out = tmp_path / "items.parquet"
    with CaptureQueriesContext(connection) as queries:
        assert exports.items_export(project=project, path=out, format="parquet", chunk_size=3) == 7
    # The schemas (2), the items with their groups through one server-side cursor (1), and one query for the
    # annotations (with annotators) of each chunk of 3 items (3): never one per item or per annotation.
    assert len(queries) <= 2 + 1 + 3, [q["sql"][:80] for q in queries.captured_queries]
    parquet = pq.ParquetFile(out)
    assert (parquet.metadata.num_rows, parquet.metadata.num_row_groups) == (7, 3)
    assert [row["item_id"] for row in parquet.read().to_pylist()] == [item.pk for item in items]


@pytest.mark.django_db
def test_export_items_writes_gzip_or_standard_output_and_refuses_parquet_there(tmp_path):
    project = ProjectFactory()
    ItemFactory(project=project)
    out = tmp_path / "items.jsonl.gz"
    call_command("export_items", "--project", project.name, str(out), stdout=StringIO())
    from_file = read_jsonl(gzip.decompress(out.read_bytes()).decode())
    stdout, stderr = StringIO(), StringIO()
    call_command("export_items", "--project", project.name, "-", stdout=stdout, stderr=stderr)
    assert read_jsonl(stdout.getvalue()) == from_file
    assert "Wrote 1 items." in stderr.getvalue()
    with pytest.raises(CommandError, match="Only JSON lines can go to standard output"):
        call_command("export_items", "--project", project.name, "--format", "parquet", "-")
    with pytest.raises(CommandError, match="No project with the name or id 'nope'"):
        call_command("export_items", "--project", "nope", str(out))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
@pytest.mark.django_db
def test_a_failed_item_export_leaves_the_previous_file(tmp_path, monkeypatch, fmt):
    project = ProjectFactory()
    ItemFactory.create_batch(3, project=project)
    out = tmp_path / f"items.{fmt}"
    out.write_text("the previous export\n")

    def fail(item, schemas):  # type: ignore[no-untyped-def]
        raise RuntimeError("disk full")

    monkeypatch.setattr(exports, "item_record", fail)
    with pytest.raises(RuntimeError, match="disk full"):
        call_command("export_items", "--project", project.name, "--format", fmt, str(out), stdout=StringIO())
    assert out.read_text() == "the previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]


# TRL pairs with a margin, from a frozen version (curation.services.version_rows decides the margin).


def export_lines(project, *extra: str) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    out = StringIO()
    call_command(
        "export_version", "-", "--project", project.name, "--freeze", "v", *extra, stdout=out, stderr=StringIO()
    )
    return read_jsonl(out.getvalue())


@pytest.mark.django_db
def test_margins_put_seven_point_and_binary_strengths_on_one_scale(tmp_path):
    project = ProjectFactory(overlap=3)
    seven = ItemFactory(project=project, response_a="seven A", response_b="seven B")
    for strength in (-3, -1, -2):  # human, seven-point: mean -2/3 of the scale
        AnnotationFactory(item=seven, strength=strength, schema=project.label_schemas.get())
    records = [pandalm_record(0, (1, 1, 0)), pandalm_record(1, (2, 2, 2))]
    run_import(project, write_json(tmp_path / "pandalm.json", records), "pandalm")
    rows = {row["chosen"][0]["content"]: row for row in export_lines(project)}
    assert rows["seven A"]["margin"] == pytest.approx(0.6667)
    assert rows["Sentence 0 is long."]["margin"] == pytest.approx(0.6667)  # binary -1, -1, 0
    assert rows["Sentence 1."]["margin"] == 1.0  # binary +1 three times: B, fully


@pytest.mark.django_db
def test_margin_is_zero_when_the_scales_disagree_with_the_raw_mean(tmp_path):
    project = ProjectFactory(overlap=3)
    item = ItemFactory(project=project)
    schema = project.label_schemas.get()
    AnnotationFactory(item=item, strength=3, schema=schema)
    AnnotationFactory(item=item, strength=-1, schema=schema, origin="imported")
    AnnotationFactory(item=item, strength=-1, schema=schema, origin="imported")
    # Recorded as binary by an import: -1 is all of A on that scale.
    usernames = list(item.annotations.filter(origin="imported").values_list("annotator__username", flat=True))
    item.metadata = {"imported_labels": {name: {"scale": "binary"} for name in usernames}}
    item.save(update_fields=["metadata"])
    assert export_lines(project) == []  # split sides: a dispute stays out unless asked for
    (row,) = export_lines(project, "--states", "disputed")
    assert row["chosen"][0]["content"] == item.response_b  # raw mean +1/3
    assert row["margin"] == 0.0  # normalised (1 - 1 - 1) / 3 leans to A


@pytest.mark.django_db
def test_items_whose_annotations_have_no_strength_have_no_consensus(tmp_path):
    project = ProjectFactory(overlap=1)
    rows = [rating_row("p", "one", 3), rating_row("p", "two", 1)]
    run_import(project, write_jsonl(tmp_path / "train.jsonl", rows), "helpsteer2")
    assert export_lines(project, "--states", "agreed", "disputed") == []
