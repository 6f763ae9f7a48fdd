"""The importer's COPY path: staged chunks written on a worker thread, duplicates skipped in SQL, file order kept,
all or nothing; and the canonical JSON the content hash is taken of, written by orjson as json.dumps would."""

import hashlib
import json
import random
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from annotate.formats import PairRecord, PriorAnnotation, canonical_prompt, content_hash
from annotate.models import Annotation, ImportBatch, Item
from annotate.services import import_writer
from annotate.services.import_writer import STAGED_FIELDS, ImportWriter
from annotate.services.imports import INSERT_BATCH_SIZE, import_batch_create, item_import
from tests.annotate.factories import ProjectFactory
from tests.annotate.test_import import chosen_of, rejected_of, run_import, write_lines, write_rows


def reference_hash(prompt, a: str, b: str, *, context: str = "", identity: str = "") -> str:
    """content_hash as it was first written: json.dumps of the value, sorted keys, compact, non-ASCII kept."""
    value = {"prompt": prompt, "responses": sorted([a, b])}
    if context:
        value["context"] = context
    if identity:
        value["identity"] = identity
    canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


ALPHABET = [*'ab "\\/\t\n\r\b\f\x01\x1f\x7f', "é", "ß", "—", "数", "😀", "\u2028", "\ufeff"]


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))


def test_the_content_hash_is_that_of_json_dumps_for_any_text():
    rng = random.Random(11)
    for _ in range(2000):
        prompt = [{"role": rng.choice(["user", "assistant"]), "content": random_text(rng)} for _ in range(3)]
        a, b, context, identity = (random_text(rng) for _ in range(4))
        assert canonical_prompt(prompt) == json.dumps(prompt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert content_hash(prompt, a, b) == reference_hash(prompt, a, b)
        assert content_hash(prompt, a, b, context=context, identity=identity) == reference_hash(
            prompt, a, b, context=context, identity=identity
        )


def test_the_content_hash_is_that_of_json_dumps_for_every_character():
    characters = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    for start in range(0, len(characters), 4096):
        text = "".join(characters[start : start + 4096])
        prompt = [{"role": "user", "content": text}]
        assert content_hash(prompt, text, "b", context=text) == reference_hash(prompt, text, "b", context=text)


def test_prompts_of_other_shapes_hash_as_json_dumps_has_them():
    for prompt in ([], [{"role": "user", "content": "q", "name": "x"}], [{"content": 1, "role": "user"}]):
        assert content_hash(prompt, "a", "b") == reference_hash(prompt, "a", "b")  # type: ignore[arg-type]


def trl_rows(count: int, *, start: int = 0) -> list[dict]:
    return [{"prompt": f"Question {n}", "chosen": f"good {n}", "rejected": f"bad {n}"} for n in range(start, count)]


@pytest.mark.django_db
def test_a_file_of_several_chunks_imports_in_file_order_skipping_duplicates(tmp_path):
    project = ProjectFactory()
    earlier = run_import(project, write_rows(tmp_path / "earlier.jsonl", trl_rows(3)), "trl")
    assert earlier.items_created == 3
    rows = trl_rows(3 * INSERT_BATCH_SIZE + 17)
    rows[INSERT_BATCH_SIZE + 5] = rows[7]  # a repeat, in a later chunk
    rows[2 * INSERT_BATCH_SIZE + 1] = {**rows[9], "chosen": rows[9]["rejected"], "rejected": rows[9]["chosen"]}
    rows[12] = rows[11]  # a repeat, in the same chunk
    batch = run_import(project, write_rows(tmp_path / "big.jsonl", rows), "trl")
    assert batch.status == ImportBatch.Status.DONE, batch.error
    # Lines 1-3 were there already; three more lines repeat earlier ones.
    assert (batch.records_read, batch.items_created, batch.duplicates_skipped) == (len(rows), len(rows) - 6, 6)
    items = list(Item.objects.filter(import_batch=batch).order_by("id"))
    lines = [item.metadata["import"]["line"] for item in items]
    assert lines == sorted(lines)
    assert set(lines) == set(range(4, len(rows) + 1)) - {13, INSERT_BATCH_SIZE + 6, 2 * INSERT_BATCH_SIZE + 2}
    assert [item.external_id for item in items[:2]] == ["line 4", "line 5"]
    # Numbered on from the project's three items, in file order, duplicates taking no number.
    assert [item.number for item in items] == list(range(4, len(rows) - 2))
    assert all(chosen_of(i).startswith("good") and rejected_of(i).startswith("bad") for i in items)
    assert Item.objects.filter(project=project).count() == len(rows) - 3


@pytest.mark.django_db
def test_imported_items_get_the_defaults_of_the_columns_an_import_does_not_set(tmp_path):
    project = ProjectFactory()
    before = timezone.now()
    batch = run_import(project, write_rows(tmp_path / "one.jsonl", trl_rows(1)), "trl")
    item = Item.objects.get(import_batch=batch)
    assert (item.project_id, item.import_batch_id) == (project.pk, batch.pk)
    assert before - timedelta(seconds=1) <= item.created_at <= timezone.now()
    for field in Item._meta.concrete_fields:
        if field.name not in {*STAGED_FIELDS, "id", "project", "import_batch", "created_at", "number"}:
            assert getattr(item, field.attname) == field.get_default(), field.name
    assert item.number == 1


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ('"chosen": "a\\u0000b"', "field 'chosen' holds the character U+0000, which cannot be stored"),
        ('"chosen": "a\\ud800b"', "field 'chosen' holds an unpaired surrogate (U+D800), which cannot be stored"),
        (
            '"chosen": [{"role": "assistant", "content": "\\uDC00"}]',
            "field 'chosen' holds an unpaired surrogate (U+DC00), which cannot be stored",
        ),
    ],
)
@pytest.mark.django_db
def test_text_a_database_cannot_hold_is_refused_by_line_and_field_after_chunks_were_written(tmp_path, bad, message):
    project = ProjectFactory()
    good = [json.dumps(row) for row in trl_rows(INSERT_BATCH_SIZE + 3)]
    path = write_lines(tmp_path / "bad.jsonl", [*good, '{"prompt": "p", "rejected": "r", ' + bad + "}"])
    batch = run_import(project, path, "trl")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error == f"bad.jsonl line {len(good) + 1}: {message}"
    assert not Item.objects.filter(project=project).exists()


@pytest.mark.django_db
def test_escapes_that_only_look_like_a_nul_or_a_surrogate_are_imported(tmp_path):
    rows = [{"prompt": "a backslash: \\u0000", "chosen": "a pair: \U0001f600", "rejected": "\\ud800 as text"}]
    batch = run_import(ProjectFactory(), write_rows(tmp_path / "fine.jsonl", rows), "trl")
    item = Item.objects.get(import_batch=batch)
    assert item.prompt == [{"role": "user", "content": "a backslash: \\u0000"}]
    assert {item.response_a, item.response_b} == {"a pair: \U0001f600", "\\ud800 as text"}


@pytest.mark.django_db
def test_nan_in_metadata_is_refused_with_its_line_and_field(tmp_path):
    lines = [
        json.dumps({"prompt": "p", "response_a": "a", "response_b": "b"}),
        '{"prompt": "p", "response_a": "a", "response_b": "c", "metadata": {"score": NaN}}',
    ]
    batch = run_import(ProjectFactory(), write_lines(tmp_path / "nan.jsonl", lines), "pairs")
    assert batch.status == ImportBatch.Status.FAILED
    assert batch.error == "nan.jsonl line 2: field 'metadata' holds NaN, which JSON does not allow"


@pytest.mark.django_db
def test_a_database_error_on_the_worker_fails_the_import_with_nothing_written(tmp_path, monkeypatch):
    project = ProjectFactory()
    path = write_rows(tmp_path / "trl.jsonl", trl_rows(3 * INSERT_BATCH_SIZE))
    move = import_writer.ItemCopier._move
    calls = []

    def failing_second_chunk(self, *, returning):  # type: ignore[no-untyped-def]
        calls.append(threading.current_thread())
        if len(calls) == 2:
            raise RuntimeError("the database went away")
        return move(self, returning=returning)

    monkeypatch.setattr(import_writer.ItemCopier, "_move", failing_second_chunk)
    batch = import_batch_create(project=project, created_by=None, file_name=path.name, format="trl")
    with pytest.raises(RuntimeError, match="the database went away"):
        item_import(batch=batch, path=path)
    batch.refresh_from_db()
    assert (batch.status, batch.error) == (ImportBatch.Status.FAILED, "trl.jsonl: the import failed unexpectedly")
    assert len(calls) == 2  # the third chunk was never written
    assert threading.main_thread() not in calls
    assert not Item.objects.filter(project=project).exists()


def pair(line: int, a: str, b: str, *labels: PriorAnnotation) -> PairRecord:
    return PairRecord(
        line=line, prompt=[{"role": "user", "content": "q"}], response_a=a, response_b=b, annotations=labels
    )


@pytest.mark.django_db
def test_labels_meet_an_item_a_chunk_on_the_worker_wrote_the_other_way_round(tmp_path: Path):
    project = ProjectFactory()
    batch = import_batch_create(project=project, created_by=None, file_name="labels.jsonl", format="pairs")
    label = PriorAnnotation("source", strength=-2, scale="seven", raw="A")
    with ImportWriter(batch=batch, rng=random.Random(1)) as writer:
        writer.write([pair(1, "x", "y"), pair(2, "z", "w")])  # no labels: on the worker
        writer.write([pair(3, "y", "x", label)])  # the first pair, sides swapped, with a label
    assert (writer.items_planned, writer.items_created, writer.annotations_created) == (3, 2, 1)
    item = Item.objects.get(project=project, response_a="x")
    annotation = Annotation.objects.get(item=item)
    assert (annotation.origin, annotation.strength) == (Annotation.Origin.IMPORTED, 2)
    assert (item.annotation_count, item.strength_count, item.prefer_b_count, item.strength_sum) == (1, 1, 1, 2)
    assert item.metadata["imported_labels"] == {"imported:source": {"scale": "seven", "raw": "A"}}


@pytest.mark.django_db(transaction=True)
def test_another_writer_of_the_projects_items_waits_for_an_import_and_is_numbered_after_it():
    from django.db import connection, transaction

    project = ProjectFactory()
    batch = import_batch_create(project=project, created_by=None, file_name="labels.jsonl", format="pairs")
    prompt = [{"role": "user", "content": "q"}]
    numbers: list[int] = []

    def other_writer() -> None:
        try:
            item = Item.objects.create(
                project=project,
                prompt=prompt,
                response_a="m",
                response_b="n",
                content_hash=content_hash(prompt, "m", "n"),
            )
            numbers.append(item.number)
        finally:
            connection.close()

    label = PriorAnnotation("source", strength=1, scale="binary")
    other = threading.Thread(target=other_writer)
    with transaction.atomic(), ImportWriter(batch=batch, rng=random.Random(1)) as writer:
        writer.write([pair(1, "y", "x", label), pair(2, "u", "v", label)])
        other.start()
        wait_until_a_backend_waits_for_the_item_numbers(project.pk)
        assert numbers == []
    other.join(timeout=60)
    assert writer.items_created == 2
    by_number = dict(Item.objects.filter(project=project).values_list("number", "import_batch_id"))
    assert by_number == {1: batch.pk, 2: batch.pk, 3: None}
    assert numbers == [3]


def wait_until_a_backend_waits_for_the_item_numbers(project_id: int) -> None:
    """Polls pg_locks until another connection waits for the project's ITEM_NUMBERS lock (a hang guard, not a
    timing: the wait is what is asserted)."""
    import time

    from django.db import connection

    from concord import locks

    sql = """
    SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND classid = %s AND objid = %s
    """
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with connection.cursor() as cursor:
            cursor.execute(sql, [locks.ITEM_NUMBERS, project_id])
            if cursor.fetchone()[0]:
                return
        time.sleep(0.05)
    raise AssertionError("no other connection waited for the item numbers")
