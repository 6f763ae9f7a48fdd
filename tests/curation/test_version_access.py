"""One rule for dataset versions, on the web pages and the API alike: a version, and everything reached through
it (its rows, exports, lineage, training runs on it, the training and scoring forms' choices), is reachable only
by a user who curates or administers every project it draws from. The reported case: annotator in P1, curator in
P2, a version drawn from both; its page and exports (P1's consensus) answered 200 on the web while the API said 404.
"""

from dataclasses import dataclass

import pytest
from django.urls import reverse
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from annotate.models import Membership, Project, Role
from curation.models import DatasetVersion, ExportJob
from curation.services.version_exports import export_job_create, export_job_run
from curation.services.versions import dataset_version_create, dataset_version_freeze
from tests.annotate.factories import AnnotationFactory, ItemFactory, MembershipFactory, ProjectFactory, UserFactory
from training.models import RewardModel, TrainingRun

SECRET = "P1 secret answer"


@pytest.fixture(autouse=True)
def media(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "media"


@dataclass
class Joint:
    p1: Project
    p2: Project
    version: DatasetVersion
    job: ExportJob
    user: object  # annotator in P1, curator in P2 (the reported user)
    p1_membership: Membership

    def grant_p1(self, role: str) -> None:
        self.p1_membership.role = role
        self.p1_membership.save()


def labelled(project: Project, text: str) -> None:
    item = ItemFactory(project=project, response_a=text)
    AnnotationFactory(item=item, strength=-3)
    AnnotationFactory(item=item, strength=-2)


@pytest.fixture
def joint() -> Joint:
    p1, p2 = ProjectFactory(overlap=2), ProjectFactory(overlap=2)
    labelled(p1, SECRET)
    labelled(p2, "P2 own answer")
    version = dataset_version_create(name="joint data", projects=[p1, p2], filters={}, created_by=None)
    version = dataset_version_freeze(version=version)
    job = export_job_run(job=export_job_create(version=version, format="trl", created_by=None))
    assert job.status == ExportJob.Status.DONE
    user = UserFactory()
    p1_membership = MembershipFactory(project=p1, user=user, role=Role.ANNOTATOR)
    MembershipFactory(project=p2, user=user, role=Role.CURATOR)
    return Joint(p1, p2, version, job, user, p1_membership)


def api(user) -> APIClient:  # type: ignore[no-untyped-def]
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def version_urls(project: Project, joint: Joint) -> dict[str, str]:
    args = [project.pk, joint.version.pk]
    return {
        "detail": reverse("curation:version_detail", args=args),
        "download": reverse("curation:export_download", args=[*args, joint.job.pk]),
    }


def api_urls(joint: Joint) -> list[str]:
    version, job = joint.version.pk, joint.job.pk
    return [
        f"/api/v1/versions/{version}/",
        f"/api/v1/versions/{version}/manifest/",
        f"/api/v1/versions/{version}/exports/",
        f"/api/v1/exports/{job}/",
        f"/api/v1/exports/{job}/download/",
    ]


@pytest.mark.django_db
def test_a_curator_of_one_project_only_gets_404_for_the_joint_version_on_the_web(login, joint):
    client = login(joint.user)
    for name, url in version_urls(joint.p2, joint).items():
        response = client.get(url)
        assert response.status_code == 404, name
        assert SECRET not in response.content.decode(errors="replace")
    args = [joint.p2.pk, joint.version.pk]
    assert client.post(reverse("curation:export_create", args=args), {"format": "csv"}).status_code == 404
    assert client.post(reverse("curation:version_freeze", args=args)).status_code == 404
    assert ExportJob.objects.count() == 1  # nothing was asked for
    listing = client.get(reverse("curation:version_list", args=[joint.p2.pk]))
    assert listing.status_code == 200
    assert "joint data" not in listing.content.decode()


@pytest.mark.django_db
def test_the_api_answers_the_same_user_the_same(joint):
    client = api(joint.user)
    for url in api_urls(joint):
        assert client.get(url).status_code == 404, url
    assert client.post(f"/api/v1/versions/{joint.version.pk}/exports/", {"format": "csv"}).status_code == 404
    assert client.get("/api/v1/versions/").json()["results"] == []
    assert ExportJob.objects.count() == 1


@pytest.mark.parametrize("role", [Role.CURATOR, Role.ADMIN])
@pytest.mark.django_db
def test_curating_every_project_opens_the_version_its_rows_and_exports(login, joint, role):
    joint.grant_p1(role)
    client = login(joint.user)
    urls = version_urls(joint.p2, joint)
    page = client.get(urls["detail"])
    assert page.status_code == 200
    assert SECRET in page.content.decode()  # the rows preview
    download = client.get(urls["download"])
    assert download.status_code == 200
    assert SECRET in b"".join(download.streaming_content).decode()
    assert "joint data" in client.get(reverse("curation:version_list", args=[joint.p2.pk])).content.decode()
    for url in api_urls(joint):
        assert api(joint.user).get(url).status_code == 200, url


@pytest.mark.django_db
def test_lineage_names_no_version_the_user_cannot_open(login, joint):
    child = dataset_version_create(
        name="child of p2", projects=[joint.p2], filters={}, parent=joint.version, created_by=None
    )
    grandchild = dataset_version_create(
        name="grandchild of both", projects=[joint.p1, joint.p2], filters={}, parent=child, created_by=None
    )
    client = login(joint.user)
    page = client.get(reverse("curation:version_detail", args=[joint.p2.pk, child.pk])).content.decode()
    assert "a version you cannot open" in page
    assert "joint data" not in page
    assert "grandchild of both" not in page
    assert "joint data" not in client.get(reverse("curation:version_new", args=[joint.p2.pk])).content.decode()
    joint.grant_p1(Role.CURATOR)
    page = client.get(reverse("curation:version_detail", args=[joint.p2.pk, child.pk])).content.decode()
    assert "joint data" in page
    assert grandchild.name in page
    assert "joint data" in client.get(reverse("curation:version_new", args=[joint.p2.pk])).content.decode()


# Training, for a project admin who annotates (or curates nothing in) another project of the version.


@pytest.fixture
def admin_of_p1(joint):  # type: ignore[no-untyped-def]
    """Admin of P1, annotator in P2; a run (and its model) on the joint version, started by someone who could."""
    user = UserFactory()
    MembershipFactory(project=joint.p1, user=user, role=Role.ADMIN)
    p2_membership = MembershipFactory(project=joint.p2, user=user, role=Role.ANNOTATOR)
    run = TrainingRun.objects.create(
        project=joint.p1, dataset_version=joint.version, config={}, status=TrainingRun.Status.SUCCEEDED
    )
    RewardModel.objects.create(project=joint.p1, run=run, path="/nowhere", model_card={})
    return user, p2_membership, run


def training_urls(project: Project, run: TrainingRun) -> dict[str, str]:
    return {
        name: reverse(f"training:{name}", args=[project.pk, run.pk])
        for name in ("run_detail", "run_log", "run_cancel", "run_resume", "run_promote")
    }


@pytest.mark.django_db
def test_training_offers_and_opens_only_versions_the_admin_reaches(login, joint, admin_of_p1):
    user, p2_membership, run = admin_of_p1
    client = login(user)
    page = client.get(reverse("training:run_list", args=[joint.p1.pk]))
    assert page.status_code == 200
    assert page.context["form"].fields["dataset_version"].queryset.count() == 0
    assert page.context["scoring_form"].fields["dataset_version"].queryset.count() == 0
    assert "joint data" not in page.content.decode()
    assert page.context["rows"] == []
    assert page.context["models"] == []
    for name, url in training_urls(joint.p1, run).items():
        response = client.get(url) if name in ("run_detail", "run_log") else client.post(url)
        assert response.status_code == 404, name
    posted = client.post(
        reverse("training:run_create", args=[joint.p1.pk]), {"dataset_version": joint.version.pk, "backbone": ""}
    )
    assert posted.status_code == 422
    assert "dataset_version" in posted.context["form"].errors
    scored = client.post(reverse("training:scoring_create", args=[joint.p1.pk]), {"dataset_version": joint.version.pk})
    assert scored.status_code == 404
    assert TrainingRun.objects.count() == 1
    # Curating P2 too opens all of it.
    p2_membership.role = Role.CURATOR
    p2_membership.save()
    page = client.get(reverse("training:run_list", args=[joint.p1.pk]))
    assert list(page.context["form"].fields["dataset_version"].queryset) == [joint.version]
    assert list(page.context["scoring_form"].fields["dataset_version"].queryset) == [joint.version]
    assert [row.run for row in page.context["rows"]] == [run]
    assert client.get(training_urls(joint.p1, run)["run_detail"]).status_code == 200
