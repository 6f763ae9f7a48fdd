"""Scoring a project's items, or only those of one of its frozen versions, with the active reward model."""

import math

import pytest
from django.urls import reverse

from annotate.models import Role
from curation.services.versions import dataset_version_create
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.training.conftest import frozen_version
from tests.training.test_runs import make_run
from training import tasks
from training.models import ItemScore, RewardModel, ScoringJob
from training.services.scoring import reward_model_promote, scoring_job_create

pytestmark = pytest.mark.django_db
TEMPERATURE = 2.5


def score_url(project) -> str:  # type: ignore[no-untyped-def]
    return reverse("training:scoring_create", args=[project.pk])


def run_chunks(job) -> None:  # type: ignore[no-untyped-def]
    """The job's chunk tasks, run here in order: the worker path is covered in test_runs and test_scoring_fanout."""
    for chunk_id in job.chunks.values_list("pk", flat=True):
        tasks.scoring_chunk_task(chunk_id)


def project_with_active_model(model_path):  # type: ignore[no-untyped-def]
    """A project with a frozen version of 6 labelled items, 3 more items added after the freeze, and an active
    model."""
    project = ProjectFactory()
    version = frozen_version(project, count=6)
    later = [ItemFactory(project=project) for _ in range(3)]
    run = make_run(project, version, status="succeeded")
    # Measured on enough held-out pairs to be promoted, with a temperature fitted on its validation pairs.
    card = {"metrics": {"heldout_pairs": 200, "heldout": {"calibration": {"temperature": TEMPERATURE}}}}
    model = RewardModel.objects.create(project=project, run=run, path=str(model_path), model_card=card)
    reward_model_promote(reward_model=model)
    return project, version, later, model


def test_a_job_limited_to_a_version_scores_only_that_version_s_items(
    login, django_capture_on_commit_callbacks, trained_model_dir
):
    project, version, later, model = project_with_active_model(trained_model_dir)
    admin = login(member(project, Role.ADMIN))
    page = admin.get(reverse("training:run_list", args=[project.pk])).content.decode()
    assert f'<option value="{version.pk}">' in page
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = admin.post(score_url(project), {"dataset_version": version.pk})
    assert response.status_code == 302
    job = ScoringJob.objects.get()
    assert (job.dataset_version, job.total) == (version, 6)
    assert len(callbacks) == 1
    run_chunks(job)
    job.refresh_from_db()
    assert (job.status, job.done, job.total) == ("done", 6, 6), job.error
    scored = set(ItemScore.objects.filter(reward_model=model).values_list("item_id", flat=True))
    in_version = set(version.rows.values_list("item_id", flat=True))
    assert scored == in_version
    assert not scored & {item.pk for item in later}
    # Each score carries the model's calibrated probability that B is preferred: sigmoid(margin / T).
    for score in ItemScore.objects.filter(reward_model=model):
        assert score.probability_b == pytest.approx(1 / (1 + math.exp(-score.margin / TEMPERATURE)))
    assert "the items of rm data" in admin.get(reverse("training:run_list", args=[project.pk])).content.decode()


def test_without_a_version_every_item_of_the_project_is_scored(
    login, django_capture_on_commit_callbacks, trained_model_dir
):
    project, _, _, model = project_with_active_model(trained_model_dir)
    admin = login(member(project, Role.ADMIN))
    with django_capture_on_commit_callbacks(execute=False):
        assert admin.post(score_url(project), {"dataset_version": ""}).status_code == 302
    job = ScoringJob.objects.get()
    assert (job.dataset_version, job.total) == (None, 9)
    run_chunks(job)
    assert ItemScore.objects.filter(reward_model=model).count() == 9


def test_a_draft_or_another_project_s_version_is_404_and_starts_nothing(login, trained_model_dir):
    project, _, _, _ = project_with_active_model(trained_model_dir)
    other = ProjectFactory()
    foreign = frozen_version(other, count=2)
    draft = dataset_version_create(name="draft", projects=[project], filters={}, created_by=None)
    admin = login(member(project, Role.ADMIN))
    for version in (foreign, draft):
        assert admin.post(score_url(project), {"dataset_version": version.pk}).status_code == 404
    assert admin.post(score_url(project), {"dataset_version": "x"}).status_code == 404
    assert not ScoringJob.objects.exists()
    curator = login(member(project, Role.CURATOR))
    assert curator.post(score_url(project), {"dataset_version": ""}).status_code == 403
    assert not ScoringJob.objects.exists()


def test_an_item_is_scored_with_its_context_as_training_read_it(trained_model_dir, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from training.ml import scoring
    from training.ml.data import example_from_row

    project, _, _, _ = project_with_active_model(trained_model_dir)
    item = ItemFactory(project=project, context="the question is about good answers", response_a="yes", response_b="no")
    scored: dict[str, list] = {}  # type: ignore[type-arg]
    score_pairs = scoring.RewardScorer.score_pairs

    def recording(self, pairs):  # type: ignore[no-untyped-def]
        for prompt, a, _ in pairs:
            scored[a] = prompt
        return score_pairs(self, pairs)

    monkeypatch.setattr(scoring.RewardScorer, "score_pairs", recording)
    run_chunks(scoring_job_create(project=project, created_by=None))
    # What a training row of this item gives the trainer: the context as a system turn before the prompt.
    row = {"prompt": item.prompt, "context": item.context, "chosen": "yes", "rejected": "no"}
    assert scored["yes"] == example_from_row(row).prompt
    assert scored["yes"][0] == {"role": "system", "content": "the question is about good answers"}
