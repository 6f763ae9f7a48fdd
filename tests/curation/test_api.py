import io
import json

import pytest
import yaml
from django.core.management import CommandError, call_command
from drf_spectacular.validation import validate_schema
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotate.models import Role
from curation.models import DatasetVersion, ExportJob
from curation.services.version_exports import export_job_run
from curation.services.versions import dataset_version_create, dataset_version_freeze
from tests.annotate.factories import AnnotationFactory, ItemFactory, MembershipFactory, ProjectFactory, member

VERSIONS = "/api/v1/versions/"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def draft(*projects, name="draft"):  # type: ignore[no-untyped-def]
    return dataset_version_create(name=name, projects=projects, filters={}, created_by=None)


def frozen(project, items: int = 3):  # type: ignore[no-untyped-def]
    for n in range(items):
        item = ItemFactory(project=project)
        AnnotationFactory(item=item, strength=-2 if n % 2 else 3)
        AnnotationFactory(item=item, strength=-1 if n % 2 else 2)
    return dataset_version_freeze(version=draft(project, name="rm v1"))


def token_client(user) -> APIClient:  # type: ignore[no-untyped-def]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def ids(response) -> list[int]:  # type: ignore[no-untyped-def]
    assert response.status_code == 200, response.content
    return [version["id"] for version in response.json()["results"]]


@pytest.mark.django_db
def test_it_answers_401_without_a_valid_token():
    project = ProjectFactory()
    version = draft(project)
    response = APIClient().get(VERSIONS)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Token")
    assert APIClient().get(f"{VERSIONS}{version.pk}/manifest/").status_code == 401
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert bad.get(VERSIONS).status_code == 401


@pytest.mark.django_db
def test_it_lists_only_versions_whose_every_project_the_user_curates():
    mine, annotated, foreign = ProjectFactory(), ProjectFactory(), ProjectFactory()
    user = member(mine, Role.CURATOR)
    MembershipFactory(project=annotated, user=user, role=Role.ANNOTATOR)
    own, shared, other = draft(mine), draft(mine, annotated), draft(foreign)
    client = token_client(user)
    assert ids(client.get(VERSIONS)) == [own.pk]
    for version in (shared, other):
        assert client.get(f"{VERSIONS}{version.pk}/").status_code == 404
    # Curating the second project too opens the version drawn from both.
    user.memberships.filter(project=annotated).update(role=Role.ADMIN)
    assert ids(client.get(VERSIONS)) == [shared.pk, own.pk]
    listed = client.get(VERSIONS).json()["results"][0]
    assert set(listed) == {
        "id",
        "name",
        "status",
        "projects",
        "parent",
        "content_hash",
        "row_count",
        "created_at",
        "frozen_at",
    }
    assert {project["name"] for project in listed["projects"]} == {mine.name, annotated.name}
    assert ids(token_client(member(mine, Role.ANNOTATOR)).get(VERSIONS)) == []


@pytest.mark.django_db
def test_lists_are_paginated_by_fifty():
    project = ProjectFactory()
    for n in range(51):
        draft(project, name=f"v{n}")
    page = token_client(member(project, Role.CURATOR)).get(VERSIONS).json()
    assert (page["count"], len(page["results"])) == (51, 50)
    assert page["next"].endswith("?page=2")


@pytest.mark.django_db
def test_it_404s_foreign_versions_and_exports():
    project, foreign = ProjectFactory(overlap=2), ProjectFactory(overlap=2)
    version = frozen(foreign)
    job = export_job_run(job=ExportJob.objects.create(version=version, format="trl", rows_total=3))
    assert job.status == ExportJob.Status.DONE
    client = token_client(member(project, Role.ADMIN))
    for url in (
        f"{VERSIONS}{version.pk}/",
        f"{VERSIONS}{version.pk}/manifest/",
        f"{VERSIONS}{version.pk}/exports/",
        f"/api/v1/exports/{job.pk}/",
        f"/api/v1/exports/{job.pk}/download/",
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(f"{VERSIONS}{version.pk}/exports/", {"format": "trl"}, format="json").status_code == 404
    assert not ExportJob.objects.exclude(pk=job.pk).exists()


@pytest.mark.django_db
def test_it_shows_a_version_with_its_manifest_and_stats():
    project = ProjectFactory(overlap=2)
    version = frozen(project)
    client = token_client(member(project, Role.CURATOR))
    detail = client.get(f"{VERSIONS}{version.pk}/").json()
    assert detail["status"] == "frozen"
    assert (detail["row_count"], detail["content_hash"]) == (3, version.content_hash)
    assert detail["manifest"] == version.manifest
    assert detail["stats"] == version.stats
    manifest = client.get(f"{VERSIONS}{version.pk}/manifest/")
    assert manifest.status_code == 200
    assert manifest.json() == version.manifest != {}


@pytest.mark.django_db
def test_an_export_request_is_accepted_then_downloads_with_the_token(django_capture_on_commit_callbacks):
    project = ProjectFactory(overlap=2)
    version = frozen(project)
    client = token_client(member(project, Role.CURATOR))
    with django_capture_on_commit_callbacks() as enqueued:
        response = client.post(f"{VERSIONS}{version.pk}/exports/", {"format": "trl"}, format="json")
    assert response.status_code == 202, response.content
    assert len(enqueued) == 1  # the Celery task, sent after the commit
    body = response.json()
    assert (body["status"], body["format"], body["download_url"]) == ("queued", "trl", None)
    assert response["Location"].endswith(f"/api/v1/exports/{body['id']}/")
    # What the worker would do.
    export_job_run(job=ExportJob.objects.get(pk=body["id"]))
    listed = client.get(f"{VERSIONS}{version.pk}/exports/").json()["results"]
    assert [(job["id"], job["status"], job["rows_done"], job["rows_total"]) for job in listed] == [
        (body["id"], "done", 3, 3)
    ]
    download = client.get(listed[0]["download_url"], HTTP_ACCEPT="application/octet-stream")
    assert download.status_code == 200
    assert download["Content-Disposition"].startswith("attachment")
    first = json.loads(b"".join(download.streaming_content).splitlines()[0])
    assert set(first) == {"prompt", "chosen", "rejected", "margin", "split"}
    assert first["chosen"][0]["role"] == "assistant"
    assert APIClient().get(listed[0]["download_url"]).status_code == 401


@pytest.mark.django_db
def test_it_refuses_exports_of_drafts_and_unknown_formats():
    project = ProjectFactory()
    version = draft(project)
    client = token_client(member(project, Role.CURATOR))
    url = f"{VERSIONS}{version.pk}/exports/"
    assert client.post(url, {"format": "trl"}, format="json").status_code == 409
    assert client.post(url, {"format": "pickle"}, format="json").status_code == 400
    assert not ExportJob.objects.exists()
    queued = ExportJob.objects.create(version=version, format="csv")
    assert client.get(f"/api/v1/exports/{queued.pk}/download/").status_code == 404


@pytest.mark.django_db
def test_the_browsable_api_works_with_a_session(login):
    project = ProjectFactory()
    version = draft(project)
    client = login(member(project, Role.CURATOR))
    page = client.get(VERSIONS, HTTP_ACCEPT="text/html")
    assert page.status_code == 200
    assert version.name.encode() in page.content


@pytest.mark.django_db
def test_the_schema_is_valid_openapi_3_with_every_endpoint():
    schema = yaml.safe_load(APIClient().get("/api/schema/").content)
    validate_schema(schema)
    assert schema["openapi"].startswith("3.")
    assert {
        "/api/v1/versions/",
        "/api/v1/versions/{id}/",
        "/api/v1/versions/{id}/manifest/",
        "/api/v1/versions/{id}/exports/",
        "/api/v1/exports/{id}/",
        "/api/v1/exports/{id}/download/",
    } <= set(schema["paths"])
    assert set(schema["paths"]["/api/v1/versions/{id}/exports/"]) == {"get", "post"}
    as_json = APIClient().get("/api/schema/?format=json")
    assert json.loads(as_json.content)["info"]["title"] == "Concord API"


@pytest.mark.django_db
def test_api_token_prints_the_same_token_each_time():
    user = member(ProjectFactory(), Role.CURATOR)
    printed = []
    for _ in range(2):
        out = io.StringIO()
        call_command("api_token", user.username, stdout=out, stderr=io.StringIO())
        printed.append(out.getvalue().strip())
    assert printed == [Token.objects.get(user=user).key] * 2
    with pytest.raises(CommandError):
        call_command("api_token", "nobody-by-that-name")


@pytest.mark.django_db
def test_versions_list_shows_drafts_and_frozen_versions():
    project = ProjectFactory(overlap=2)
    version, pending = frozen(project), draft(project, name="pending")
    listed = {v["id"]: v["status"] for v in token_client(member(project, Role.CURATOR)).get(VERSIONS).json()["results"]}
    assert listed == {version.pk: DatasetVersion.Status.FROZEN, pending.pk: DatasetVersion.Status.DRAFT}
