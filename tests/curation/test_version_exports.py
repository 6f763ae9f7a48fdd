import csv
import io
import json
import time

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connections
from django.urls import reverse

from annotate.models import Role
from concord import jobs
from concord.celery import app as celery_app
from curation.models import DatasetVersion, ExportJob
from curation.services.version_exports import (
    csv_cell,
    export_job_create,
    export_job_run,
    trl_row,
    version_export,
    version_rows,
)
from curation.services.versions import VersionError, dataset_version_create, dataset_version_freeze
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.jobs import private_queue
from tests.waits import HANG_GUARD_S

NASTY = ['=HYPERLINK("http://x")', "+1+2", "-3", "@SUM(A1)", "\tTabbed", "\rReturn"]


@pytest.fixture(autouse=True)
def media(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def frozen_version(project, items: int = 3):  # type: ignore[no-untyped-def]
    for n in range(items):
        item = ItemFactory(project=project)
        AnnotationFactory(item=item, strength=-2 if n % 2 else 3)
        AnnotationFactory(item=item, strength=-1 if n % 2 else 2)
    version = dataset_version_create(name="rm v1", projects=[project], filters={}, created_by=None)
    return dataset_version_freeze(version=version)


def detail_url(project, version) -> str:  # type: ignore[no-untyped-def]
    return reverse("curation:version_detail", args=[project.pk, version.pk])


def download_url(project, job) -> str:  # type: ignore[no-untyped-def]
    return reverse("curation:export_download", args=[project.pk, job.version_id, job.pk])


def downloaded(response) -> bytes:  # type: ignore[no-untyped-def]
    return b"".join(response.streaming_content)


@pytest.fixture
def worker_closes_connections():  # type: ignore[no-untyped-def]
    """The worker runs tasks in a thread of this process; its database connection must close with each task,
    or the test database cannot be dropped at the end of the run."""

    def close(**_: object) -> None:
        connections.close_all()

    task_postrun.connect(close, weak=False)
    yield
    task_postrun.disconnect(close)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_closes_connections")
def test_exports_run_on_a_real_worker_and_download_for_members(login, monkeypatch):
    project = ProjectFactory(overlap=2)
    version = frozen_version(project, items=5)
    client = login(member(project, Role.CURATOR))
    # A queue of this test's own, so no other worker on the shared Redis takes the task.
    queue = private_queue(monkeypatch, jobs.EXPORT)
    url = reverse("curation:export_create", args=[project.pk, version.pk])
    with start_worker(celery_app, perform_ping_check=False, queues=[queue], shutdown_timeout=HANG_GUARD_S):
        for export_format in ("trl", "fine", "csv", "parquet"):
            assert client.post(url, {"format": export_format}).status_code == 302
        deadline = time.monotonic() + HANG_GUARD_S
        while ExportJob.objects.exclude(status__in=["done", "failed"]).exists() and time.monotonic() < deadline:
            time.sleep(0.1)
    exports = {job.format: job for job in ExportJob.objects.filter(version=version)}
    assert {job.status for job in exports.values()} == {"done"}, [job.error for job in exports.values()]
    assert all((job.rows_done, job.rows_total) == (5, 5) for job in exports.values())
    trl = [json.loads(line) for line in downloaded(client.get(download_url(project, exports["trl"]))).splitlines()]
    assert len(trl) == 5
    assert set(trl[0]) == {"prompt", "chosen", "rejected", "margin", "split"}
    assert trl[0]["chosen"][0]["role"] == "assistant"
    assert 0 < trl[0]["margin"] <= 1
    fine = [json.loads(line) for line in downloaded(client.get(download_url(project, exports["fine"]))).splitlines()]
    assert set(fine[0]["labels"]) == {"chosen", "rejected"}
    assert len(fine[0]["annotation_ids"]) == 2
    response = client.get(download_url(project, exports["csv"]))
    assert response["Content-Disposition"].startswith("attachment")
    assert len(list(csv.reader(io.StringIO(downloaded(response).decode())))) == 6
    page = client.get(detail_url(project, version), HTTP_HX_REQUEST="true")
    assert page.status_code == 286
    assert download_url(project, exports["parquet"]).encode() in page.content


@pytest.mark.django_db
def test_the_parquet_export_loads_with_hugging_face_datasets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    version = frozen_version(ProjectFactory(overlap=2), items=4)
    path = tmp_path / "version.parquet"
    assert version_export(version=version, format="parquet", path=path) == 4
    loaded = datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=str(tmp_path / "cache"))
    assert loaded.num_rows == 4
    assert {"prompt", "chosen", "rejected", "margin", "split", "weight", "labels"} <= set(loaded.column_names)
    first = loaded[0]
    assert first["chosen"][0]["role"] == "assistant"
    assert first["prompt"][0]["role"] == "user"
    assert set(json.loads(first["labels"])) == {"chosen", "rejected"}


@pytest.mark.django_db
def test_csv_cells_that_could_be_formulas_are_escaped(tmp_path):
    project = ProjectFactory(overlap=1)
    for n, text in enumerate(NASTY):
        item = ItemFactory(project=project, prompt=[{"role": "user", "content": f"q{n}"}], response_a=text, source=text)
        AnnotationFactory(item=item, strength=-1)
    version = dataset_version_freeze(
        version=dataset_version_create(name="csv", projects=[project], filters={}, created_by=None)
    )
    path = tmp_path / "version.csv"
    version_export(version=version, format="csv", path=path)
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["chosen"] for row in rows) == sorted("'" + text for text in NASTY)
    assert sorted(row["source"] for row in rows) == sorted("'" + text for text in NASTY)
    assert all(not row["chosen"].startswith(("=", "+", "-", "@")) for row in rows)
    assert csv_cell("plain") == "plain"
    assert csv_cell(0.5) == 0.5
    assert csv_cell("a=b") == "a=b"


@pytest.mark.django_db
def test_downloads_are_for_curators_of_every_project_in_the_version(login):
    first, second = ProjectFactory(overlap=2), ProjectFactory()
    version = frozen_version(first)
    version.projects.add(second)
    job = export_job_run(job=export_job_create(version=version, format="trl", created_by=None))
    assert job.status == "done"
    assert job.file.name.startswith("exports/")
    assert login(member(first, Role.CURATOR)).get(download_url(first, job)).status_code == 404
    assert login(member(second, Role.CURATOR)).get(download_url(first, job)).status_code == 404
    assert login(member(first, Role.ANNOTATOR)).get(download_url(first, job)).status_code == 403
    both = member(first, Role.CURATOR)
    second.memberships.create(user=both, role=Role.ANNOTATOR)
    assert login(both).get(download_url(first, job)).status_code == 404
    second.memberships.filter(user=both).update(role=Role.ADMIN)
    assert login(both).get(download_url(first, job)).status_code == 200
    other = ProjectFactory()
    assert login(member(other, Role.ADMIN)).get(download_url(other, job)).status_code == 404


@pytest.mark.django_db
def test_a_draft_cannot_be_exported_and_a_job_runs_once(login):
    project = ProjectFactory()
    draft = dataset_version_create(name="draft", projects=[project], filters={}, created_by=None)
    with pytest.raises(VersionError):
        export_job_create(version=draft, format="trl", created_by=None)
    response = login(member(project, Role.CURATOR)).post(
        reverse("curation:export_create", args=[project.pk, draft.pk]), {"format": "trl"}
    )
    assert response.status_code == 302
    assert not ExportJob.objects.exists()
    version = frozen_version(ProjectFactory(overlap=2))
    job = export_job_run(job=export_job_create(version=version, format="csv", created_by=None))
    again = export_job_run(job=job)
    assert (again.status, again.file.name) == ("done", job.file.name)
    assert DatasetVersion.objects.get(pk=version.pk).status == "frozen"


@pytest.mark.django_db
def test_a_running_export_keeps_the_page_polling(login):
    project = ProjectFactory(overlap=2)
    version = frozen_version(project)
    ExportJob.objects.create(version=version, format="trl", status="running", rows_done=2, rows_total=3)
    response = login(member(project, Role.CURATOR)).get(detail_url(project, version), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert b"hx-get" in response.content
    assert b"2 / 3 rows" in response.content


@pytest.mark.django_db
def test_trl_lines_are_the_rows_in_trl_format_whatever_the_text(tmp_path):
    project = ProjectFactory(overlap=1)
    texts = ['He said "hi"\nthen left', "Ünïcödé — 日本語 \\ back\\slash", "tab\there </script>"]
    for n, text in enumerate(texts):
        prompt = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"{text} {n}"}]
        item = ItemFactory(project=project, prompt=prompt, response_a=text, response_b=f"other {n}")
        AnnotationFactory(item=item, strength=-3)
    version = dataset_version_freeze(
        version=dataset_version_create(name="trl", projects=[project], filters={}, created_by=None)
    )
    path = tmp_path / "version.jsonl"
    assert version_export(version=version, format="trl", path=path) == 3
    lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert lines == [trl_row(row) for row in version_rows(version=version)]
    assert lines[0]["chosen"][0]["content"] == texts[0]
    assert lines[0]["margin"] == 1.0


@pytest.mark.django_db
def test_an_export_reports_its_progress_as_it_goes(monkeypatch):
    from curation.services import version_exports

    version = frozen_version(ProjectFactory(overlap=2), items=5)
    seen: list[int] = []
    monkeypatch.setattr(version_exports, "ROW_CHUNK", 2)
    monkeypatch.setattr(version_exports, "_progress", lambda job: seen.append)
    for export_format in ("trl", "csv"):
        job = export_job_run(job=export_job_create(version=version, format=export_format, created_by=None))
        assert (job.status, job.rows_done, job.rows_total) == ("done", 5, 5)
    assert seen == [2, 4, 2, 4]
