import gzip
import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from annotate.models import ImportBatch, Item
from annotate.services import exports
from annotate.services.imports import import_batch_create, item_import
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory


def annotated(project, *strengths: int, **fields) -> Item:
    item = ItemFactory(project=project, **fields)
    for strength in strengths:
        AnnotationFactory(item=item, strength=strength)
    return item


@pytest.fixture
def project():
    """Two items with a consensus (A, then B) and three without one."""
    project = ProjectFactory(overlap=2)
    annotated(project, -2, -1, prompt=[{"role": "user", "content": "A wins"}], response_a="good A", response_b="bad B")
    annotated(project, 1, 3, prompt=[{"role": "user", "content": "B wins"}], response_a="bad A", response_b="good B")
    annotated(project, -1, 1)  # a tie on average
    annotated(project, -3)  # too few annotations
    annotated(project)  # none at all
    return project


def read_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line]


@pytest.mark.django_db
def test_it_exports_only_consensus_pairs_with_the_winner_as_chosen(project, tmp_path):
    out = tmp_path / "pairs.jsonl"
    stdout = StringIO()
    call_command("export_pairs", "--project", project.name, "--format", "trl", str(out), stdout=stdout)
    assert f"Wrote 2 pairs to {out}" in stdout.getvalue()
    assert read_jsonl(out.read_text()) == [
        {
            "prompt": [{"role": "user", "content": "A wins"}],
            "chosen": [{"role": "assistant", "content": "good A"}],
            "rejected": [{"role": "assistant", "content": "bad B"}],
        },
        {
            "prompt": [{"role": "user", "content": "B wins"}],
            "chosen": [{"role": "assistant", "content": "good B"}],
            "rejected": [{"role": "assistant", "content": "bad A"}],
        },
    ]


@pytest.mark.django_db
def test_it_gzips_a_gz_name_and_can_write_to_stdout(project, tmp_path):
    out = tmp_path / "pairs.jsonl.gz"
    call_command("export_pairs", "--project", str(project.pk), str(out), stdout=StringIO())
    assert out.read_bytes()[:2] == b"\x1f\x8b"
    from_file = read_jsonl(gzip.decompress(out.read_bytes()).decode())
    stdout, stderr = StringIO(), StringIO()
    call_command("export_pairs", "--project", str(project.pk), "-", stdout=stdout, stderr=stderr)
    assert read_jsonl(stdout.getvalue()) == from_file
    assert len(from_file) == 2
    assert "Wrote 2 pairs." in stderr.getvalue()


@pytest.mark.django_db
def test_a_failed_export_leaves_no_file_behind(project, tmp_path, monkeypatch):
    out = tmp_path / "pairs.jsonl"
    out.write_text("the previous export\n")
    calls = []

    def one_row_then_fail(pair):
        calls.append(pair)
        if len(calls) > 1:
            raise RuntimeError("disk full")
        return {"ok": 1}

    monkeypatch.setattr(exports, "pair_to_trl", one_row_then_fail)
    with pytest.raises(RuntimeError, match="disk full"):
        call_command("export_pairs", "--project", project.name, str(out), stdout=StringIO())
    assert out.read_text() == "the previous export\n"
    assert [p.name for p in tmp_path.iterdir()] == ["pairs.jsonl"]


@pytest.mark.django_db
def test_export_names_an_unknown_project(tmp_path):
    with pytest.raises(CommandError, match="No project with the name or id 'nope'"):
        call_command("export_pairs", "--project", "nope", str(tmp_path / "x.jsonl"))


@pytest.mark.django_db
def test_an_export_imports_back_as_the_same_pairs(project, tmp_path):
    out = tmp_path / "round-trip.jsonl.gz"
    call_command("export_pairs", "--project", project.name, str(out), stdout=StringIO())
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
