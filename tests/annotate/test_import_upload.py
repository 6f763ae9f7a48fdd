import gzip
import json
import time

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connections
from django.test import override_settings
from django.urls import reverse

from annotate.models import ImportBatch, Item, Role
from annotate.selectors import import_progress_cache_key
from concord import jobs
from concord.celery import app as celery_app
from tests.annotate.factories import ProjectFactory, member
from tests.jobs import private_queue
from tests.waits import HANG_GUARD_S


def jsonl_upload(rows: list[dict], name: str = "items.jsonl.gz") -> SimpleUploadedFile:
    data = gzip.compress("".join(json.dumps(row) + "\n" for row in rows).encode())
    return SimpleUploadedFile(name, data, content_type="application/gzip")


PAIRS = [
    {"prompt": "Capital of France?", "response_a": "Paris", "response_b": "Lyon", "label": "a"},
    {"prompt": "Capital of Italy?", "response_a": "Milan", "response_b": "Rome", "label": "b"},
    {"prompt": "Capital of Italy?", "response_a": "Rome", "response_b": "Milan"},  # a duplicate
]


@pytest.fixture(autouse=True)
def media(settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def list_url(project) -> str:
    return reverse("annotate:import_list", args=[project.pk])


def detail_url(batch) -> str:
    return reverse("annotate:import_detail", args=[batch.project_id, batch.pk])


def upload(client, project, file, **fields):
    return client.post(list_url(project), {"file": file, "format": "pairs", **fields})


@pytest.mark.django_db
def test_admin_upload_creates_a_queued_batch_and_redirects(login, media):
    project = ProjectFactory()
    admin = member(project, Role.ADMIN)
    response = upload(login(admin), project, jsonl_upload(PAIRS), seed="42")
    batch = ImportBatch.objects.get(project=project)
    assert response.status_code == 302
    assert response["Location"] == detail_url(batch)
    assert (batch.status, batch.format, batch.seed, batch.created_by) == ("queued", "pairs", 42, admin)
    assert batch.file_name == "items.jsonl.gz"
    assert batch.upload.path.startswith(str(media))
    assert batch.bytes_total == batch.upload.size > 0
    page = login(admin).get(list_url(project))
    assert page.status_code == 200
    assert b"items.jsonl.gz" in page.content
    assert b'enctype="multipart/form-data"' in page.content


@pytest.fixture
def worker_closes_connections():
    """The worker runs tasks in a thread of this process; its database connection must close with each
    task, or the test database cannot be dropped at the end of the run."""

    def close(**_: object) -> None:
        connections.close_all()

    task_postrun.connect(close, weak=False)
    yield
    task_postrun.disconnect(close)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_closes_connections")
def test_an_upload_is_imported_by_a_real_worker(login, monkeypatch):
    project = ProjectFactory()
    client = login(member(project, Role.ADMIN))
    # A queue of this test's own, so no other worker on the shared Redis takes the task and no stale
    # message from an earlier run reaches this worker.
    queue = private_queue(monkeypatch, jobs.IMPORT)
    with start_worker(celery_app, perform_ping_check=False, queues=[queue], shutdown_timeout=HANG_GUARD_S):
        response = upload(client, project, jsonl_upload(PAIRS))
        batch = ImportBatch.objects.get(project=project)
        deadline = time.monotonic() + HANG_GUARD_S
        while batch.status in ("queued", "running") and time.monotonic() < deadline:
            time.sleep(0.1)
            batch.refresh_from_db()
    assert response.status_code == 302
    assert batch.status == ImportBatch.Status.DONE, batch.error
    assert (batch.records_read, batch.items_created, batch.duplicates_skipped) == (3, 2, 1)
    assert Item.objects.filter(project=project).count() == 2
    page = client.get(detail_url(batch))
    assert page.status_code == 200
    assert b"Done" in page.content
    assert b'<strong id="items-created">2</strong>' in page.content
    assert b'<strong id="duplicates-skipped">1</strong>' in page.content
    assert b"hx-get" not in page.content


@pytest.mark.django_db
def test_polling_a_finished_import_stops_with_286(login):
    project = ProjectFactory()
    batch = ImportBatch.objects.create(project=project, file_name="f.jsonl", format="trl", seed=1, status="done")
    response = login(member(project, Role.ADMIN)).get(detail_url(batch), HTTP_HX_REQUEST="true")
    assert response.status_code == 286
    assert b'id="import-progress"' in response.content
    assert b"<html" not in response.content


@pytest.mark.django_db
def test_polling_a_running_import_shows_published_progress(login, settings):
    project = ProjectFactory()
    batch = ImportBatch.objects.create(project=project, file_name="f.jsonl", format="trl", seed=1, status="running")
    from django.core.cache import cache

    cache.set(import_progress_cache_key(batch.pk), {"records_read": 1234, "bytes_read": 25, "bytes_total": 100})
    response = login(member(project, Role.ADMIN)).get(detail_url(batch), HTTP_HX_REQUEST="true")
    cache.delete(import_progress_cache_key(batch.pk))
    assert response.status_code == 200
    assert b"1234 records read (25% of the file)" in response.content
    assert b"hx-get" in response.content
    assert b"<html" not in response.content


@pytest.mark.django_db
def test_a_failed_import_shows_its_error_escaped(login):
    project = ProjectFactory()
    batch = ImportBatch.objects.create(
        project=project,
        file_name="f.jsonl",
        format="pairs",
        seed=1,
        status="failed",
        error="f.jsonl line 3: field 'prompt' must be a string, got <script>alert(1)</script>",
    )
    response = login(member(project, Role.ADMIN)).get(detail_url(batch))
    assert response.status_code == 200
    assert b"f.jsonl line 3: field &#x27;prompt&#x27; must be a string, got &lt;script&gt;" in response.content
    assert b"<script>alert" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.ANNOTATOR, Role.CURATOR])
def test_non_admins_may_not_import(login, role):
    project = ProjectFactory()
    client = login(member(project, role))
    assert upload(client, project, jsonl_upload(PAIRS)).status_code == 403
    assert client.get(list_url(project)).status_code == 403
    assert not ImportBatch.objects.exists()


@pytest.mark.django_db
def test_members_of_another_project_get_404(login):
    project, other = ProjectFactory(), ProjectFactory()
    batch = ImportBatch.objects.create(project=project, file_name="f.jsonl", format="trl", seed=1)
    outsider = member(other, Role.ADMIN)
    client = login(outsider)
    assert client.get(list_url(project)).status_code == 404
    assert upload(client, project, jsonl_upload(PAIRS)).status_code == 404
    assert client.get(detail_url(batch)).status_code == 404
    # Their own project's URL with this project's batch id: still not found.
    foreign = reverse("annotate:import_detail", args=[other.pk, batch.pk])
    assert client.get(foreign).status_code == 404
    assert ImportBatch.objects.count() == 1


@pytest.mark.django_db
def test_anonymous_users_are_sent_to_log_in(client):
    project = ProjectFactory()
    response = client.get(list_url(project))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
@override_settings(CONCORD_MAX_UPLOAD_BYTES=100)
def test_an_oversized_upload_is_refused(login):
    project = ProjectFactory()
    big = SimpleUploadedFile("big.jsonl", b"x" * 101)
    response = upload(login(member(project, Role.ADMIN)), project, big)
    assert response.status_code == 422
    assert b"The file is 101\xc2\xa0bytes; files up to 100\xc2\xa0bytes can be imported." in response.content
    assert not ImportBatch.objects.exists()


@pytest.mark.django_db
def test_an_upload_without_a_format_is_refused(login):
    project = ProjectFactory()
    response = login(member(project, Role.ADMIN)).post(list_url(project), {"file": jsonl_upload(PAIRS)})
    assert response.status_code == 422
    assert b"This field is required." in response.content
    assert not ImportBatch.objects.exists()
