"""A training run starts from an allowed backbone only (training.selectors_backbones): the packaged default, a model
under CONCORD_MODEL_ROOTS, or a model trained in a project the user administers. The reported case: a project
admin (not staff) trained on another project's model directory, and the errors probed the filesystem ("no
*.safetensors weights in /root", the file names of a pickle directory). Every other path gets one message that
says nothing about it, from the form, the services and the worker alike."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from django.urls import reverse

from annotate.models import Project, Role
from curation.models import DatasetVersion
from tests.annotate.factories import MembershipFactory, ProjectFactory, member
from tests.training.conftest import frozen_version
from tests.training.test_runs import form_data
from training.ml.config import default_backbone
from training.models import Campaign, RewardModel, TrainingRun
from training.selectors_backbones import BACKBONE_REFUSED, backbone_allowed, backbone_choices
from training.services.campaigns import CampaignError, campaign_start
from training.services.runs import TrainingError, training_run_enqueue, training_run_execute


def model_copy(source: Path, to: Path) -> Path:
    shutil.copytree(source, to)
    return to


def trained_model(project: Project, path: Path) -> RewardModel:
    """A reward model of the project, at `path`, from a run on a version of the project alone."""
    version = DatasetVersion.objects.filter(projects=project).first() or frozen_version(project, count=4)
    run = TrainingRun.objects.create(project=project, dataset_version=version, config={}, status="succeeded")
    return RewardModel.objects.create(project=project, run=run, path=str(path), model_card={})


@pytest.fixture
def world(settings, tmp_path, tiny_backbone):  # type: ignore[no-untyped-def]
    """An admin of `project` (not staff); a model root holding one model; a model of the admin's project and one
    of a project the admin does not administer; and paths that must all be refused alike."""
    root = tmp_path / "models"
    model_copy(tiny_backbone, root / "team" / "tiny-bert")
    settings.CONCORD_MODEL_ROOTS = [str(root)]
    project, foreign = ProjectFactory(), ProjectFactory()
    admin = member(project, Role.ADMIN)
    MembershipFactory(project=foreign, user=admin, role=Role.CURATOR)  # curating is not administering
    own = trained_model(project, model_copy(tiny_backbone, tmp_path / "training" / "run-a" / "model"))
    other = trained_model(foreign, model_copy(tiny_backbone, tmp_path / "training" / "run-b" / "model"))
    pickles = root / "pickled"
    pickles.mkdir()
    (pickles / "config.json").write_text("{}")
    (pickles / "pytorch_model.bin").write_bytes(b"never loaded")
    outside = model_copy(tiny_backbone, tmp_path / "elsewhere")
    (root / "link").symlink_to(outside)
    (tmp_path / "file.txt").write_text("a file")
    refused = {
        "another project's model": other.path,
        "an absent path": str(tmp_path / "absent"),
        "a file": str(tmp_path / "file.txt"),
        "the root's home": "/root",
        "pickle weights under a root": str(pickles),
        "a model outside the roots": str(outside),
        "a symlink out of a root": str(root / "link"),
        "'..' out of a root": f"{root}/team/../../elsewhere",
        "a relative path": os.path.relpath(root / "team" / "tiny-bert"),
    }
    return {
        "root": root,
        "project": project,
        "version": own.run.dataset_version,
        "admin": admin,
        "own": own,
        "other": other,
        "refused": refused,
    }


@pytest.mark.django_db
def test_the_form_offers_the_allowed_backbones_in_a_select(login, world):
    page = login(world["admin"]).get(reverse("training:run_list", args=[world["project"].pk]))
    choices = page.context["form"].fields["backbone"].choices
    assert [value for value, _ in choices] == [
        default_backbone(),
        str(world["root"] / "team" / "tiny-bert"),
        world["own"].path,
    ]
    assert page.context["form"]["backbone"].value() == default_backbone()
    assert '<select name="backbone"' in page.content.decode()
    assert world["other"].path not in page.content.decode()
    assert all(backbone_allowed(value, user=world["admin"]) for value, _ in choices)


@pytest.mark.django_db
def test_an_admin_trains_from_any_offered_backbone(login, world, sent_jobs):
    client = login(world["admin"])
    url = reverse("training:run_create", args=[world["project"].pk])
    for backbone in (default_backbone(), str(world["root"] / "team" / "tiny-bert"), world["own"].path):
        response = client.post(url, form_data(world["version"], backbone))
        assert response.status_code == 302, response.context["form"].errors
    assert [run.config["backbone"] for run in TrainingRun.objects.filter(created_by=world["admin"]).order_by("pk")] == [
        default_backbone(),
        str(world["root"] / "team" / "tiny-bert"),
        world["own"].path,
    ]


@pytest.mark.django_db
def test_every_other_path_gets_one_message_that_tells_nothing(login, world, sent_jobs):
    client = login(world["admin"])
    url = reverse("training:run_create", args=[world["project"].pk])
    runs_before = TrainingRun.objects.count()
    for case, path in world["refused"].items():
        response = client.post(url, form_data(world["version"], path))
        assert response.status_code == 422, case
        assert response.context["form"].errors == {"backbone": [BACKBONE_REFUSED]}, case
        page = response.content.decode()
        assert "pytorch_model.bin" not in page, case
        assert "/root" not in page, case
    assert TrainingRun.objects.count() == runs_before
    assert not sent_jobs


@pytest.mark.django_db
def test_the_services_refuse_the_same_paths_with_the_same_message(world, sent_jobs):
    project, admin, version = world["project"], world["admin"], world["version"]
    for case, path in world["refused"].items():
        with pytest.raises(TrainingError) as refused:
            training_run_enqueue(project=project, version=version, config={"backbone": path}, created_by=admin)
        assert refused.value.by_path() == {"backbone": [BACKBONE_REFUSED]}, case
        with pytest.raises(CampaignError) as refused_campaign:
            campaign_start(project=project, name="c", config={"backbone": path}, created_by=admin)
        assert refused_campaign.value.by_path() == {"backbone": [BACKBONE_REFUSED]}, case
    assert not TrainingRun.objects.filter(created_by=admin).exists()
    assert not Campaign.objects.exists()
    # A run made by no one (a system job) has the default and the roots, not any project's models.
    with pytest.raises(TrainingError):
        training_run_enqueue(project=project, version=version, config={"backbone": world["own"].path}, created_by=None)


@pytest.mark.django_db
def test_the_worker_checks_again_before_it_reads_anything(world, settings, tmp_path):
    """A run written by other means than the form and the services, or whose creator no longer administers the
    project of the model it names, fails with the same message before any file of that path is read."""
    settings.TRAINING_ROOT = tmp_path / "training-root"
    project, admin = world["project"], world["admin"]
    run = TrainingRun.objects.create(
        project=project,
        dataset_version=world["version"],
        config={"backbone": world["other"].path, "epochs": 1, "batch_size": 4, "max_length": 32},
        created_by=admin,
        output_dir=str(tmp_path / "training-root" / "run"),
    )
    with pytest.raises(TrainingError):
        training_run_execute(run=run)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.FAILED
    assert run.error == f"Training failed: backbone: {BACKBONE_REFUSED}"
    assert world["other"].path not in run.log
    assert not (tmp_path / "training-root" / "run" / "data.jsonl").exists()  # stopped before the data was read


@pytest.mark.django_db
def test_losing_the_admin_role_withdraws_the_project_s_models(world):
    assert backbone_allowed(world["own"].path, user=world["admin"])
    world["project"].memberships.filter(user=world["admin"]).update(role=Role.CURATOR)
    assert not backbone_allowed(world["own"].path, user=world["admin"])


@pytest.mark.django_db
def test_a_model_of_the_project_stays_allowed_however_many_newer_ones_there_are(world, tiny_backbone, monkeypatch):
    """The select offers the newest MAX_CHOICES models; the check itself asks about the one path, so an older
    model (and a member of an ensemble) chosen before newer rounds pushed it off the list still trains."""
    monkeypatch.setattr("training.selectors_backbones.MAX_CHOICES", 1)
    ensemble = world["own"].path.replace("run-a", "run-c")
    model_copy(tiny_backbone, Path(ensemble) / "member-0")
    trained_model(world["project"], Path(ensemble))
    trained_model(world["project"], model_copy(tiny_backbone, Path(world["own"].path.replace("run-a", "run-d"))))
    assert world["own"].path not in [backbone.path for backbone in backbone_choices(world["admin"])]
    assert backbone_allowed(world["own"].path, user=world["admin"])
    assert backbone_allowed(f"{ensemble}/member-0", user=world["admin"])
    assert not backbone_allowed(ensemble, user=world["admin"]), "an ensemble's directory is no model"


def _model_roots_setting(value: str | None) -> list[str]:
    """CONCORD_MODEL_ROOTS as a fresh process reads the settings with the variable set to `value` (None: unset)."""
    env = {name: text for name, text in os.environ.items() if name != "CONCORD_MODEL_ROOTS"}
    if value is not None:
        env["CONCORD_MODEL_ROOTS"] = value
    code = "import json; from concord.settings import base; print(json.dumps(base.CONCORD_MODEL_ROOTS))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_model_roots_come_from_the_environment_colon_or_comma_separated() -> None:
    assert _model_roots_setting("/srv/models:/data/hf, /opt/more ,") == ["/srv/models", "/data/hf", "/opt/more"]
    assert _model_roots_setting(None) == []
