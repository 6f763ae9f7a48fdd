"""Freezing writes rows with COPY from rows made of SQL-read facts, hashing them as it writes: the stored rows, their
hash and the labels are what the rules say, whatever the chunking and however odd the labels."""

import json
import threading

import pytest

from annotate.labels import DEFAULT_SCHEMA
from annotate.models import Annotation
from curation.models import Adjudication, DatasetRow, DatasetVersion
from curation.services import version_rows, versions
from curation.services.version_rows import PlannedRow, canonical_json
from curation.services.versions import (
    VersionError,
    dataset_version_content_hash,
    dataset_version_create,
    dataset_version_freeze,
)
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, UserFactory

pytestmark = pytest.mark.django_db

# Texts JSON must escape, and text it must not: quotes, backslashes, every control character, DEL, non-BMP.
ODD_TEXT = 'He said "hi"\\ \x01\x08\x0b\x1f\x7f\n\r\t — 日本語 \u2028 🙂 </script>'


def draft(project, **filters):  # type: ignore[no-untyped-def]
    return dataset_version_create(name="v", projects=[project], filters=filters, created_by=None)


def freeze(project, **filters) -> DatasetVersion:  # type: ignore[no-untyped-def]
    return dataset_version_freeze(version=draft(project, **filters))


def stored_rows(version) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    rows = DatasetRow.objects.filter(version=version).order_by("position")
    return list(rows.values(*DatasetRow.CONTENT_FIELDS))


def test_the_hash_written_with_the_rows_is_the_hash_of_the_stored_rows():
    project = ProjectFactory(overlap=2, schema=DEFAULT_SCHEMA)
    schema = project.label_schemas.get()
    prompt = [{"role": "system", "content": ODD_TEXT, "zeta": 1, "alpha": [1.5, -0.0, 1e-7]}, {"role": "user"}]
    item = ItemFactory(project=project, prompt=prompt, context=ODD_TEXT, response_a=ODD_TEXT, source=ODD_TEXT)
    # Numbers that read back from jsonb otherwise than Python writes them: exponents from 1e16 up, -0.0.
    spans = [{"response": "a", "start": 0, "end": 3, "category": "irrelevant", "extra": [1e16, 1.5e17, -0.0, 2.5e-5]}]
    ratings = {"a": {"helpfulness": 4, "odd": 1e20}, "b": {"helpfulness": 1, "tiny": -1e-9}}
    AnnotationFactory(item=item, strength=-2, schema=schema, ratings=ratings, spans=spans)
    AnnotationFactory(
        item=item, strength=-3, schema=schema, ratings=ratings, missing=[{"response": "b", "k": ODD_TEXT}]
    )
    version = freeze(project)
    assert version.row_count == 1
    assert version.content_hash == dataset_version_content_hash(version=version)
    (row,) = stored_rows(version)
    assert row["chosen"] == ODD_TEXT
    assert row["prompt"] == json.loads(json.dumps(prompt))
    assert row["labels"]["chosen"]["ratings"] == {"helpfulness": 4.0, "odd": 1e20}
    assert row["labels"]["rejected"]["ratings"] == {"helpfulness": 1.0, "tiny": -0.0}


def test_a_row_line_is_the_canonical_json_of_the_row():
    fields = {
        "item_id": 7,
        "split": "train",
        "prompt": [{"role": "user", "content": ODD_TEXT}],
        "context": ODD_TEXT,
        "chosen": "a",
        "rejected": ODD_TEXT,
        "margin": 0.3333,
        "weight": 1,
        "provenance": DatasetRow.Provenance.CONSENSUS,
        "source": "s",
        "annotation_ids": [3, 1],
        "labels": {"chosen": {"ratings": {"b": 1.5, "a": 2.0}}, "rejected": {}},
    }
    values, line = versions._stored(9, 4, fields, None)
    expected = {**fields, "position": 4, "weight": 1.0, "provenance": "human_consensus"}
    assert line == canonical_json(expected) + "\n"
    assert set(json.loads(line)) == set(DatasetRow.CONTENT_FIELDS)
    assert values[:4] == (9, 4, 7, "train")


def test_rows_are_frozen_a_chunk_at_a_time_in_item_order(monkeypatch):
    monkeypatch.setattr(version_rows, "ITEM_CHUNK", 3)
    project = ProjectFactory(overlap=1)
    items = [ItemFactory(project=project) for _ in range(8)]
    for n, item in enumerate(items):
        AnnotationFactory(item=item, strength=0 if n == 4 else (-1) ** n)  # one tie: no row
    written: list[int] = []
    monkeypatch.setattr(versions, "_progress", lambda version, rows: written.append(rows))
    version = freeze(project)
    rows = stored_rows(version)
    assert [row["item_id"] for row in rows] == [item.pk for n, item in enumerate(items) if n != 4]
    assert [row["position"] for row in rows] == list(range(7))
    assert written == [3, 5, 7]  # progress after each chunk of three items (the second had the tie)
    assert version.content_hash == dataset_version_content_hash(version=version)


def test_mean_ratings_take_numbers_only_and_adjudicated_ratings_stand():
    project = ProjectFactory(overlap=3)
    item = ItemFactory(project=project)
    given = [
        {"a": {"x": 1, "y": True, "z": "high"}, "b": {"x": 2}},
        {"a": {"x": 2, "y": 0.5, "z": None}, "b": {}},
        {"a": {"x": 2, "w": 3}},
    ]
    for ratings in given:
        AnnotationFactory(item=item, strength=-1, ratings=ratings)
    decided = ItemFactory(project=project)
    for _ in range(3):
        AnnotationFactory(item=decided, strength=1, ratings={"a": {"x": 4}, "b": {"x": 0}})
    Adjudication.objects.create(
        item=decided, curator=UserFactory(), decision="label", strength=-2, ratings={"a": {"x": 1}}, reason="r"
    )
    rows = {row["item_id"]: row for row in stored_rows(freeze(project))}
    labels = rows[item.pk]["labels"]
    assert labels["chosen"]["ratings"] == {"w": 3.0, "x": 1.6667, "y": 0.75}  # True counts as 1, as in Python
    assert labels["rejected"]["ratings"] == {"x": 2.0}
    decided_labels = rows[decided.pk]["labels"]
    assert decided_labels["chosen"]["ratings"] == {"x": 1}  # the curator's, as given
    assert decided_labels["rejected"]["ratings"] == {"x": 0.0}  # none given for B: the annotators' mean
    assert (rows[decided.pk]["margin"], rows[decided.pk]["provenance"]) == (0.6667, "adjudicated")


def test_an_import_recorded_scale_decides_the_margin_of_imported_annotations():
    project = ProjectFactory(overlap=2)
    item = ItemFactory(project=project)
    imported = [
        AnnotationFactory(item=item, strength=-1, origin=Annotation.Origin.IMPORTED, annotator=UserFactory())
        for _ in range(2)
    ]
    item.metadata = {"imported_labels": {a.annotator.username: {"scale": "binary"} for a in imported}, "other": 1}
    item.save(update_fields=["metadata"])
    (row,) = stored_rows(freeze(project))
    assert (row["margin"], row["provenance"], row["chosen"]) == (1.0, "imported", item.response_a)


def test_versions_of_several_projects_take_each_project_in_turn():
    first, second = ProjectFactory(overlap=1), ProjectFactory(overlap=1)
    for project in (second, first):
        for _ in range(2):
            AnnotationFactory(item=ItemFactory(project=project), strength=2)
    version = dataset_version_create(name="both", projects=[second, first], filters={}, created_by=None)
    rows = stored_rows(dataset_version_freeze(version=version))
    order = sorted([first, second], key=lambda p: p.pk)
    expected = [i for p in order for i in p.items.order_by("pk").values_list("pk", flat=True)]
    assert [row["item_id"] for row in rows] == expected


def test_rows_given_by_a_caller_take_the_model_defaults_and_are_hashed_alike():
    project = ProjectFactory()
    item = ItemFactory(project=project)

    def rows():  # type: ignore[no-untyped-def]
        fields = {"item_id": item.pk, "split": "train", "prompt": item.prompt, "chosen": "c", "rejected": "r"}
        yield PlannedRow(fields={**fields, "margin": 1, "provenance": "ai_labelled"}, state="s", agreement=1.0,
                         schema_ids=set())  # fmt: skip

    version = dataset_version_freeze(version=draft(project), rows=rows, manifest_extra={"why": "test"})
    (row,) = stored_rows(version)
    assert (row["context"], row["source"], row["weight"], row["annotation_ids"], row["labels"]) == ("", "", 1.0, [], {})
    assert version.manifest["why"] == "test"
    assert version.manifest["counts"]["provenance"] == {"ai_labelled": 1}
    assert version.content_hash == dataset_version_content_hash(version=version)


def test_a_freeze_that_fails_midway_leaves_the_version_failed_without_rows(monkeypatch):
    monkeypatch.setattr(versions, "INSERT_BATCH", 2)
    project = ProjectFactory()
    item = ItemFactory(project=project)

    def rows():  # type: ignore[no-untyped-def]
        for n in range(5):
            if n == 3:
                raise RuntimeError("the campaign's model went away")
            fields = {"item_id": item.pk, "split": "train", "prompt": [], "chosen": "c", "rejected": "r"}
            yield PlannedRow({**fields, "margin": 0.5, "provenance": "ai_labelled"}, "s", 1.0, set())

    version = draft(project)
    with pytest.raises(RuntimeError, match="went away"):
        dataset_version_freeze(version=version, rows=rows)
    version.refresh_from_db()
    assert (version.status, version.row_count) == ("failed", 0)
    assert "went away" in version.error
    assert not DatasetRow.objects.filter(version=version).exists()
    with pytest.raises(TypeError, match="no field"):
        dataset_version_freeze(version=version, rows=lambda: iter([PlannedRow({"bogus": 1}, "s", 1.0, set())]))
    version.refresh_from_db()
    assert version.status == "failed"
    with pytest.raises(VersionError):
        dataset_version_freeze(version=freeze(project))


@pytest.mark.django_db(transaction=True)
def test_outside_a_transaction_the_next_chunk_is_read_meanwhile_and_its_failure_fails_the_freeze(monkeypatch):
    monkeypatch.setattr(version_rows, "ITEM_CHUNK", 2)
    project = ProjectFactory(overlap=1)
    items = [ItemFactory(project=project) for _ in range(5)]
    for n, item in enumerate(items):
        AnnotationFactory(item=item, strength=(-1) ** n)
    version = freeze(project)
    assert [row["item_id"] for row in stored_rows(version)] == [item.pk for item in items]
    assert version.content_hash == dataset_version_content_hash(version=version)
    read = version_rows._facts
    calls: list[str] = []

    def second_read_fails(states):  # type: ignore[no-untyped-def]
        calls.append(threading.current_thread().name)
        if len(calls) == 2:
            raise RuntimeError("connection lost")
        return read(states)

    monkeypatch.setattr(version_rows, "_facts", second_read_fails)
    failing = draft(project)
    with pytest.raises(RuntimeError, match="connection lost"):
        dataset_version_freeze(version=failing)
    failing.refresh_from_db()
    assert (failing.status, failing.row_count) == ("failed", 0)
    assert not DatasetRow.objects.filter(version=failing).exists()
    assert calls == ["read-ahead"] * 2  # read by the thread, which stopped at the failure
