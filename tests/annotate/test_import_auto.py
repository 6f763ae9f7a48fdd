"""Imports that detect their format (the upload form's default and the command's), say which they found, name the
likely ones when none fits; a finished import links to its items and to labeling; a project whose imported labels
already fill the overlap says so on its home page."""

import gzip
import json
from io import StringIO

import pytest
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotate.models import ImportBatch, Item, Role
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.annotate.layouts import fg_record, pandalm_record, run_import, write_json, write_jsonl

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


@pytest.fixture
def sent(monkeypatch):
    """Import tasks are kept here instead of going to a worker."""
    kept: list[tuple[str, int]] = []
    monkeypatch.setattr("concord.jobs.send", lambda name, job_id: kept.append((name, job_id)))
    return kept


def list_url(project) -> str:
    return reverse("annotate:import_list", args=[project.pk])


def pandalm_upload(name: str = "testset-v1.json") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, json.dumps([pandalm_record(n) for n in range(3)]).encode())


def test_the_upload_form_detects_the_format_by_default(login) -> None:
    project = ProjectFactory()
    page = login(member(project, Role.ADMIN)).get(list_url(project)).content.decode()
    assert '<option value="auto" selected>' in page


def test_an_auto_upload_takes_the_detected_format_and_says_which(login, sent, media) -> None:
    project = ProjectFactory()
    client = login(member(project, Role.ADMIN))
    upload = pandalm_upload()
    response = client.post(list_url(project), {"file": upload, "format": "auto"})
    batch = ImportBatch.objects.get(project=project)
    assert response.status_code == 302
    assert batch.format == "pandalm"
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Detected format: PandaLM."]
    # Detection read the start of the upload; the stored file is still the whole of it.
    assert (media / batch.upload.name).read_bytes() == json.dumps([pandalm_record(n) for n in range(3)]).encode()
    detail = client.get(reverse("annotate:import_detail", args=[project.pk, batch.pk])).content.decode()
    assert "PandaLM" in detail


def test_an_auto_upload_of_gzip_json_lines_is_detected(login, sent) -> None:
    project = ProjectFactory()
    rows = [{"prompt": f"Q{n}", "chosen": f"good {n}", "rejected": f"bad {n}"} for n in range(3)]
    data = gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode())
    response = login(member(project, Role.ADMIN)).post(
        list_url(project), {"file": SimpleUploadedFile("rows.jsonl.gz", data), "format": "auto"}
    )
    assert response.status_code == 302
    assert ImportBatch.objects.get(project=project).format == "trl"


def test_an_upload_no_format_fits_names_the_likely_ones_and_imports_nothing(login, sent) -> None:
    project = ProjectFactory()
    bad = SimpleUploadedFile("odd.json", json.dumps([{"instruction": "<b>Hi</b>", "text": "x"}]).encode())
    response = login(member(project, Role.ADMIN)).post(list_url(project), {"file": bad, "format": "auto"})
    page = response.content.decode()
    assert response.status_code == 422
    assert "odd.json: no format fits; this looks like a JSON array: PandaLM?" in page
    assert not ImportBatch.objects.exists()
    assert not sent


def test_a_chosen_format_is_used_as_chosen(login, sent) -> None:
    project = ProjectFactory()
    response = login(member(project, Role.ADMIN)).post(
        list_url(project), {"file": pandalm_upload(), "format": "pandalm"}
    )
    assert response.status_code == 302
    assert ImportBatch.objects.get(project=project).format == "pandalm"
    assert not list(get_messages(response.wsgi_request))


def test_a_file_failing_in_its_chosen_format_names_the_format_it_looks_like(tmp_path) -> None:
    project = ProjectFactory()
    batch = run_import(project, write_json(tmp_path / "data.json", [fg_record(1)]), "pandalm")
    assert batch.status == ImportBatch.Status.FAILED
    assert "The file looks like FineGrainedRLHF: import it with that format, or with auto." in batch.error


def test_the_command_detects_the_format_when_none_is_given(tmp_path) -> None:
    project = ProjectFactory()
    path = write_json(tmp_path / "testset.json", [pandalm_record(n) for n in range(2)])
    out = StringIO()
    call_command("import_items", "--project", project.name, str(path), stdout=out)
    assert "Detected format: PandaLM." in out.getvalue()
    assert ImportBatch.objects.get(project=project).format == "pandalm"
    assert Item.objects.filter(project=project).count() == 2


def test_the_command_names_the_likely_formats_when_none_fits(tmp_path) -> None:
    project = ProjectFactory()
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "Q", "response_a": "A"}])
    with pytest.raises(CommandError, match=r"rows.jsonl: no format fits; this looks like JSON lines: pairs"):
        call_command("import_items", "--project", project.name, "--format", "auto", str(path))
    assert not ImportBatch.objects.exists()


def test_a_finished_import_links_to_its_items_and_to_labeling(login, tmp_path) -> None:
    project = ProjectFactory(overlap=5)
    batch = run_import(project, write_json(tmp_path / "data.json", [pandalm_record(n) for n in range(2)]), "pandalm")
    page = login(member(project, Role.ADMIN)).get(reverse("annotate:import_detail", args=[project.pk, batch.pk]))
    html = page.content.decode()
    assert f'href="{reverse("annotate:item_list", args=[project.pk])}?batch={batch.pk}"' in html
    assert f'href="{reverse("annotate:label", args=[project.pk])}"' in html
    assert "See its 2 items" in html
    assert 'data-testid="filled-by-imports"' not in html  # 3 imported labels, 5 wanted


def test_a_project_filled_by_imported_labels_says_so_at_home_and_after_the_import(login, tmp_path) -> None:
    project = ProjectFactory(overlap=3)  # PandaLM brings three annotators' labels per pair
    batch = run_import(project, write_json(tmp_path / "data.json", [pandalm_record(n) for n in range(2)]), "pandalm")
    client = login(member(project, Role.ADMIN))
    home = client.get(reverse("annotate:project_queue", args=[project.pk])).content.decode()
    assert "Every item already has the 3 labels this project wants, from its import: nothing is left to label." in home
    assert "Nothing left for you" not in home
    detail = client.get(reverse("annotate:import_detail", args=[project.pk, batch.pk])).content.decode()
    assert "Every item already has the 3 labels this project wants, from its import" in detail
    assert f'href="{reverse("annotate:label", args=[project.pk])}"' not in detail


def test_a_project_filled_by_people_keeps_the_plain_message(login) -> None:
    project = ProjectFactory(overlap=1)
    item = ItemFactory(project=project)
    annotator = member(project)
    AnnotationFactory(item=item, annotator=annotator)
    Item.objects.filter(pk=item.pk).update(annotation_count=1, human_count=1)
    home = login(annotator).get(reverse("annotate:project_queue", args=[project.pk])).content.decode()
    assert "Nothing left for you in this project right now." in home
    assert 'data-testid="filled-by-imports"' not in home
