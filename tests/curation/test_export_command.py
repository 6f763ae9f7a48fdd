"""`manage.py export_version`: every export of labels is a frozen version, decided by the rules the pages use."""

import gzip
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotate.models import ImportBatch, Item
from annotate.services.imports import import_batch_create, item_import
from curation.models import DatasetVersion
from curation.services import version_exports
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory

pytestmark = pytest.mark.django_db


def annotated(project, *strengths: int, **fields) -> Item:  # type: ignore[no-untyped-def]
    item = ItemFactory(project=project, **fields)
    for strength in strengths:
        AnnotationFactory(item=item, strength=strength)
    return item


@pytest.fixture
def project():  # type: ignore[no-untyped-def]
    """Two items the annotators agree on (A, then B) and four without a label to train on."""
    project = ProjectFactory(overlap=2)
    annotated(project, -2, -1, prompt=[{"role": "user", "content": "A wins"}], response_a="good A", response_b="bad B")
    annotated(project, 1, 3, prompt=[{"role": "user", "content": "B wins"}], response_a="bad A", response_b="good B")
    annotated(project, -1, 1)  # disputed: split sides
    annotated(project, 0, 0)  # agreed on a tie: no chosen response
    annotated(project, -3)  # in progress: too few annotations
    annotated(project)  # none at all
    return project


def read_jsonl(text: str) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in text.splitlines() if line]


def test_it_freezes_a_version_and_exports_its_pairs_with_the_winner_as_chosen(project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "pairs.jsonl"
    stdout, stderr = StringIO(), StringIO()
    call_command(
        "export_version",
        "--project",
        project.name,
        "--freeze",
        "rm-1",
        "--seed",
        "3",
        str(out),
        stdout=stdout,
        stderr=stderr,
    )
    version = DatasetVersion.objects.get()
    assert (version.name, version.status, version.row_count) == ("rm-1", "frozen", 2)
    assert f"Wrote 2 rows of version {version.pk} (rm-1) to {out}" in stdout.getvalue()
    rows = sorted(read_jsonl(out.read_text()), key=lambda row: row["prompt"][0]["content"])
    assert [(r["prompt"], r["chosen"], r["rejected"], r["margin"]) for r in rows] == [
        ([{"role": "user", "content": "A wins"}], [{"role": "assistant", "content": "good A"}],
         [{"role": "assistant", "content": "bad B"}], 0.5),
        ([{"role": "user", "content": "B wins"}], [{"role": "assistant", "content": "good B"}],
         [{"role": "assistant", "content": "bad A"}], 0.6667),
    ]  # fmt: skip
    # The same version again, by id: the same bytes.
    again = tmp_path / "again.jsonl"
    call_command(
        "export_version", "--project", project.name, "--version-id", str(version.pk), str(again), stdout=StringIO()
    )
    assert again.read_bytes() == out.read_bytes()


def test_disputed_items_come_only_when_asked_for(project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = StringIO()
    call_command(
        "export_version", "--project", project.name, "--freeze", "all", "--states", "agreed", "disputed",
        "--format", "fine", "-", stdout=out, stderr=StringIO(),
    )  # fmt: skip
    rows = read_jsonl(out.getvalue())
    # The -1/+1 split has a mean of 0: a tie, so still no row; asking changes nothing there.
    assert len(rows) == 2
    assert all(set(row) == set(version_exports.ROW_FIELDS) for row in rows)


def test_it_gzips_a_gz_name_and_can_write_to_stdout(project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "pairs.jsonl.gz"
    call_command(
        "export_version", "--project", str(project.pk), "--freeze", "v", str(out), stdout=StringIO(), stderr=StringIO()
    )
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    from_file = read_jsonl(gzip.decompress(out.read_bytes()).decode())
    version = DatasetVersion.objects.get()
    stdout, stderr = StringIO(), StringIO()
    call_command(
        "export_version",
        "--project",
        str(project.pk),
        "--version-id",
        str(version.pk),
        "-",
        stdout=stdout,
        stderr=stderr,
    )
    assert read_jsonl(stdout.getvalue()) == from_file
    assert len(from_file) == 2
    assert "Wrote 2 rows" in stderr.getvalue()


def test_a_failed_export_leaves_no_new_file_behind(project, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "pairs.jsonl"
    calls = []

    def one_row_then_fail(row):  # type: ignore[no-untyped-def]
        calls.append(row)
        if len(calls) > 1:
            raise RuntimeError("disk full")
        return "{}\n"

    monkeypatch.setattr(version_exports, "trl_line", one_row_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        call_command(
            "export_version", "--project", project.name, "--freeze", "v", str(out), stdout=StringIO(), stderr=StringIO()
        )
    assert [p.name for p in tmp_path.iterdir()] == []


def test_it_names_what_is_wrong(project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(CommandError, match="No project with the name or id 'nope'"):
        call_command("export_version", "--project", "nope", "--freeze", "v", str(tmp_path / "x.jsonl"))
    with pytest.raises(CommandError, match="No frozen version 999 of"):
        call_command("export_version", "--project", project.name, "--version-id", "999", str(tmp_path / "x.jsonl"))
    existing = tmp_path / "taken.jsonl"
    existing.write_text("keep me\n")
    with pytest.raises(CommandError, match="already exists"):
        call_command("export_version", "--project", project.name, "--freeze", "v", str(existing), stderr=StringIO())
    assert existing.read_text() == "keep me\n"


def test_an_export_imports_back_as_the_same_pairs(project, tmp_path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "round-trip.jsonl.gz"
    call_command(
        "export_version", "--project", project.name, "--freeze", "v", str(out), stdout=StringIO(), stderr=StringIO()
    )
    target = ProjectFactory()
    batch = import_batch_create(project=target, created_by=None, file_name=out.name, format="trl", seed=11)
    batch = item_import(batch=batch, path=out)
    assert batch.status == ImportBatch.Status.DONE, batch.error

    def chosen_rejected(item: Item) -> tuple[str, str]:
        a_chosen = item.source_label == Item.SourceLabel.A
        return (item.response_a, item.response_b) if a_chosen else (item.response_b, item.response_a)

    imported = {(json.dumps(i.prompt), *chosen_rejected(i)) for i in Item.objects.filter(project=target)}
    assert imported == {
        (json.dumps([{"role": "user", "content": "A wins"}]), "good A", "bad B"),
        (json.dumps([{"role": "user", "content": "B wins"}]), "good B", "bad A"),
    }
