"""The foundation's promise in one test: import HH-RLHF transcripts, label them over HTTP, export TRL JSONL."""

import gzip
import json
import re
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from annotate.models import Annotation, Item
from tests.annotate.factories import ProjectFactory, member

pytestmark = pytest.mark.django_db


def transcript(*turns: str) -> str:
    return "".join(f"\n\n{'Human' if n % 2 == 0 else 'Assistant'}: {text}" for n, text in enumerate(turns))


def test_hh_rlhf_items_can_be_imported_labeled_and_exported(tmp_path, login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(name="HH", overlap=2)
    rows = [
        {
            "chosen": transcript(f"question {n}", "hint", "and then?", f"a careful answer {n}"),
            "rejected": transcript(f"question {n}", "hint", "and then?", f"a rude answer {n}"),
        }
        for n in range(4)
    ]
    source = tmp_path / "harmless.jsonl.gz"
    source.write_bytes(gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode()))
    call_command("import_items", "--project", "HH", "--format", "hh-rlhf", str(source), stdout=StringIO())
    assert Item.objects.filter(project=project).count() == 4

    # Two annotators each prefer the careful answer on every item, whichever side it landed on.
    for annotator in (member(project), member(project)):
        client = login(annotator)
        page = client.post(reverse("annotate:label_next", args=[project.pk]), HTTP_HX_REQUEST="true")
        while (match := re.search(r'data-item-id="(\d+)"', page.content.decode())) is not None:
            item = Item.objects.get(pk=int(match.group(1)))
            strength = -2 if "careful" in item.response_a else 3
            data = {"strength": strength, "justification": "polite", "submission_uuid": str(uuid.uuid4())}
            page = client.post(reverse("annotate:submit", args=[project.pk, item.pk]), data, HTTP_HX_REQUEST="true")
            assert page.status_code == 200
    assert Annotation.objects.filter(item__project=project).count() == 8

    out = tmp_path / "pairs.jsonl"
    call_command(
        "export_version", "--project", "HH", "--freeze", "hh-1", str(out), stdout=StringIO(), stderr=StringIO()
    )
    exported = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(exported) == 4
    for row in exported:
        assert [turn["role"] for turn in row["prompt"]] == ["user", "assistant", "user"]
        assert row["chosen"][0]["content"].startswith("a careful answer")
        assert row["rejected"][0]["content"].startswith("a rude answer")
