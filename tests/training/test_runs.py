import json
import math
import re
from datetime import timedelta

import pytest
from celery.contrib.testing.worker import start_worker
from django.core.management import call_command
from django.db import IntegrityError, transaction
from django.urls import reverse
from django.utils import timezone

from annotate.models import Role
from concord import jobs, locks
from concord.celery import app as celery_app
from curation.services.versions import dataset_version_create
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.jobs import private_queue
from tests.locks import held_by_a_live_worker
from tests.training.conftest import frozen_version
from tests.waits import HANG_GUARD_S, wait_for
from training.ml.config import default_backbone
from training.models import ItemScore, RewardModel, ScoringJob, TrainingRun
from training.selectors import queue_model, run_curve
from training.services.runs import (
    TrainingError,
    thin_history,
    training_run_cancel,
    training_run_enqueue,
    training_run_execute,
    training_run_resume,
)
from training.services.scoring import reward_model_promote


def list_url(project) -> str:  # type: ignore[no-untyped-def]
    return reverse("training:run_list", args=[project.pk])


def create_url(project) -> str:  # type: ignore[no-untyped-def]
    return reverse("training:run_create", args=[project.pk])


def run_url(run, name: str = "run_detail") -> str:  # type: ignore[no-untyped-def]
    return reverse(f"training:{name}", args=[run.project_id, run.pk])


def tiny_config(backbone, **overrides):  # type: ignore[no-untyped-def]
    config = {"backbone": str(backbone), "epochs": 1, "batch_size": 4, "max_length": 32, "learning_rate": 1e-3}
    return {**config, **overrides}


def form_data(version, backbone=None, **overrides):  # type: ignore[no-untyped-def]
    backbone = backbone or default_backbone()
    data = {
        "dataset_version": version.pk,
        "backbone": str(backbone),
        "objective": "bt",
        "epochs": 1,
        "batch_size": 4,
        "learning_rate": "0.001",
        "max_length": 32,
        "ensemble_size": 1,
        "seed": 0,
    }
    return {**data, **overrides}


def make_run(project, version, status=TrainingRun.Status.QUEUED, **fields):  # type: ignore[no-untyped-def]
    return TrainingRun.objects.create(
        project=project, dataset_version=version, config=tiny_config("/models/tiny"), status=status, **fields
    )


def make_model(run, **fields):  # type: ignore[no-untyped-def]
    fields.setdefault("model_card", {"metrics": {"heldout_pairs": 200}})
    return RewardModel.objects.create(project=run.project, run=run, path="/models/x", **fields)


@pytest.fixture
def no_enqueue(sent_jobs):  # type: ignore[no-untyped-def]
    return sent_jobs


@pytest.mark.django_db
def test_only_admins_reach_training_pages_and_foreign_ids_are_404(login):
    project, other = ProjectFactory(), ProjectFactory()
    version = frozen_version(project, count=4)
    run = make_run(project, version)
    foreign = make_run(other, frozen_version(other, count=4))
    admin = login(member(project, Role.ADMIN))
    assert admin.get(list_url(project)).status_code == 200
    assert admin.get(run_url(run)).status_code == 200
    assert login(member(project, Role.CURATOR)).get(list_url(project)).status_code == 403
    assert login(member(project, Role.ANNOTATOR)).get(run_url(run)).status_code == 403
    assert login(member(other, Role.ADMIN)).get(list_url(project)).status_code == 404
    # A run of another project through this project's URL, even for an admin of both.
    assert admin.get(reverse("training:run_detail", args=[project.pk, foreign.pk])).status_code == 404
    assert admin.post(reverse("training:run_cancel", args=[project.pk, foreign.pk])).status_code == 404
    assert admin.post(reverse("training:run_promote", args=[project.pk, foreign.pk])).status_code == 404
    assert login(member(project, Role.CURATOR)).post(create_url(project), form_data(version)).status_code == 403
    nav = admin.get(reverse("curation:version_detail", args=[project.pk, version.pk])).content
    assert list_url(project).encode() in nav
    assert run_url(run).encode() in nav  # the version page lists the runs that used it


@pytest.mark.django_db
def test_a_ticked_dropout_box_keeps_the_backbone_s_dropout(login, no_enqueue):
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    response = login(member(project, Role.ADMIN)).post(create_url(project), form_data(version, dropout="on"))
    assert response.status_code == 302
    assert TrainingRun.objects.get().config["dropout"] is True


@pytest.mark.django_db
def test_the_form_explains_a_draft_version_and_a_bad_learning_rate(login, no_enqueue):
    project = ProjectFactory()
    admin = login(member(project, Role.ADMIN))
    draft = dataset_version_create(name="draft data", projects=[project], filters={}, created_by=None)
    response = admin.post(create_url(project), form_data(draft))
    assert response.status_code == 422
    assert "only a frozen version can be trained on" in response.content.decode()
    version = frozen_version(project, count=4)
    response = admin.post(create_url(project), form_data(version, learning_rate="3"))
    assert response.status_code == 422
    assert response.context["form"].errors["learning_rate"] == [
        "The learning rate must be above 0 and at most 1 (e.g. 2e-5)."
    ]
    response = admin.post(create_url(project), form_data(version, objective="regression"))
    assert response.status_code == 422
    assert "needs at least one attribute" in response.content.decode()  # TrainConfig.validate's message
    assert not TrainingRun.objects.exists()
    assert not no_enqueue


@pytest.mark.django_db
def test_retrain_enqueues_the_run_after_the_commit(login, no_enqueue, django_capture_on_commit_callbacks):
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    admin_user = member(project, Role.ADMIN)
    page = login(admin_user).get(list_url(project))
    assert b'name="backbone"' in page.content
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = login(admin_user).post(create_url(project), form_data(version, epochs=2))
        assert not no_enqueue  # nothing is sent before the commit
    run = TrainingRun.objects.get()
    assert response.status_code == 302
    assert response["Location"] == run_url(run)
    assert (run.status, run.dataset_version, run.created_by) == ("queued", version, admin_user)
    assert run.config["epochs"] == 2
    assert run.config["checkpoint_every"] >= 1
    assert run.config["dropout"] is False  # the box starts unticked
    assert b'name="dropout"' in page.content
    assert run.output_dir.endswith(f"run-{run.pk}")
    for callback in callbacks:
        callback()
    assert no_enqueue == [(jobs.TRAINING_RUN, run.pk)]


@pytest.mark.django_db
def test_the_service_refuses_a_version_of_another_project_and_a_bad_config(no_enqueue):
    project, other = ProjectFactory(), ProjectFactory()
    version = frozen_version(other, count=4)
    with pytest.raises(TrainingError, match="not a version of"):
        training_run_enqueue(project=project, version=version, config=tiny_config("/m"), created_by=None)
    with pytest.raises(TrainingError, match="learning_rate"):
        training_run_enqueue(project=other, version=version, config=tiny_config("/m", learning_rate=0), created_by=None)
    with pytest.raises(TrainingError, match="unknown training settings"):
        training_run_enqueue(project=other, version=version, config={"lr": 1}, created_by=None)


@pytest.mark.django_db
def test_cancel_stops_a_queued_run_at_once_and_asks_a_running_one(login):
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    admin = login(member(project, Role.ADMIN))
    queued, running = make_run(project, version), make_run(project, version, status="running")
    assert admin.post(run_url(queued, "run_cancel")).status_code == 302
    assert admin.post(run_url(running, "run_cancel")).status_code == 302
    queued.refresh_from_db()
    running.refresh_from_db()
    assert (queued.status, queued.finished_at is not None) == ("cancelled", True)
    assert (running.status, running.cancel_requested) == ("running", True)
    with pytest.raises(TrainingError, match="only a queued or running run"):
        training_run_cancel(run=queued)
    assert "only a queued or running run" in admin.post(run_url(queued, "run_cancel"), follow=True).content.decode()


@pytest.mark.django_db
def test_promote_keeps_one_active_model_per_project(login):
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    first, second = (make_model(make_run(project, version, status="succeeded")) for _ in range(2))
    other_project = ProjectFactory()
    elsewhere = make_model(make_run(other_project, frozen_version(other_project, count=4), status="succeeded"))
    reward_model_promote(reward_model=elsewhere)
    admin = login(member(project, Role.ADMIN))
    assert admin.post(run_url(first.run, "run_promote")).status_code == 302
    assert set(RewardModel.objects.filter(is_active=True)) == {first, elsewhere}
    assert admin.post(run_url(second.run, "run_promote")).status_code == 302
    assert set(RewardModel.objects.filter(is_active=True)) == {second, elsewhere}
    no_model = make_run(project, version, status="failed")
    assert "no trained model" in admin.post(run_url(no_model, "run_promote"), follow=True).content.decode()
    with pytest.raises(IntegrityError), transaction.atomic():
        RewardModel.objects.filter(pk=first.pk).update(is_active=True)


@pytest.mark.django_db
def test_the_run_page_polls_until_the_run_ends_and_draws_its_curves(login):
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    history = [{"step": s, "loss": 1.0 / s, "eval_accuracy": None if s % 5 else 0.5 + s / 100} for s in range(1, 21)]
    run = make_run(project, version, status="running", step=20, total_steps=40, history=history, log="line <b>\n")
    admin = login(member(project, Role.ADMIN))
    polling = admin.get(run_url(run), HTTP_HX_REQUEST="true")
    assert polling.status_code == 200
    body = polling.content.decode()
    assert "<html" not in body
    assert "hx-get" in body
    assert 'id="loss-curve"' in body
    assert 'id="accuracy-curve"' in body
    assert "<polyline" in body
    assert "0,0 " in body
    assert "line &lt;b&gt;" in body  # the log is escaped
    listing = admin.get(list_url(project), HTTP_HX_REQUEST="true")
    assert listing.status_code == 200
    assert '<rect class="bar" width="50"' in listing.content.decode()
    TrainingRun.objects.filter(pk=run.pk).update(status="succeeded", metrics={"heldout": {"accuracy": 0.75}})
    finished = admin.get(run_url(run), HTTP_HX_REQUEST="true")
    assert finished.status_code == 286
    assert 'id="heldout-accuracy">0.7500<' in finished.content.decode()
    assert admin.get(list_url(project), HTTP_HX_REQUEST="true").status_code == 286


def test_history_is_thinned_keeping_its_ends_and_curves_are_integer_points():
    history = [{"step": s, "loss": float(s)} for s in range(2001)]
    thinned = thin_history(history)
    assert len(thinned) == 1001
    assert thinned[0]["step"] == 0
    assert thinned[-1]["step"] == 2000
    curve = run_curve([{"step": 10, "loss": 2.0}, {"step": 20, "loss": 1.0}, {"step": 30, "loss": None}], "loss")
    assert curve.points == [(0, 0), (600, 160)]


# The end to end run, on a real worker.


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_closes_connections")
def test_a_run_trains_on_a_real_worker_registers_a_model_and_scores_items(
    login, monkeypatch, settings, tmp_path, tiny_backbone
):
    settings.TRAINING_ROOT = tmp_path / "training"
    project = ProjectFactory()
    version = frozen_version(project, count=16)
    admin = login(member(project, Role.ADMIN))
    queue = private_queue(monkeypatch, jobs.TRAINING_RUN, jobs.SCORING, jobs.SCORING_CHUNK)
    with start_worker(celery_app, perform_ping_check=False, queues=[queue], shutdown_timeout=HANG_GUARD_S):
        response = admin.post(create_url(project), form_data(version, backbone=tiny_backbone))
        assert response.status_code == 302, response.content.decode()[-2000:]
        run = TrainingRun.objects.get()
        wait_for(lambda: TrainingRun.objects.get(pk=run.pk).finished)
        run.refresh_from_db()
        assert run.status == "succeeded", (run.error, run.log)
        # A handful of held-out pairs measures nothing: the page says so, and promotion needs the admin to insist.
        assert "Too small to trust" in admin.get(run_url(run)).content.decode()
        refused = admin.post(run_url(run, "run_promote"), follow=True).content.decode()
        assert "Not promoted." in refused
        assert not RewardModel.objects.filter(is_active=True).exists()
        assert admin.post(run_url(run, "run_promote"), {"despite_warning": "1"}).status_code == 302
        assert admin.post(reverse("training:scoring_create", args=[project.pk])).status_code == 302
        wait_for(lambda: ScoringJob.objects.get().finished)
    assert run.step == run.total_steps > 0
    assert run.metrics["heldout"]["accuracy"] is not None
    assert run.metrics["resumed_from"] == 0
    assert run.history
    assert run.history[-1]["step"] == run.step
    model = RewardModel.objects.get(run=run)
    assert model.is_active
    assert model.model_card["dataset_version"] == {
        "id": version.pk,
        "name": version.name,
        "content_hash": version.content_hash,
    }
    assert model.model_card["config"]["backbone"] == str(tiny_backbone)
    assert "heldout" in model.model_card["metrics"]
    assert model.model_card["code_version"]
    assert "promoted_despite" in model.model_card
    calibration = model.model_card["metrics"]["heldout"]["calibration"]
    assert calibration["temperature"] > 0
    job = ScoringJob.objects.get()
    assert (job.status, job.done, job.total) == ("done", 16, 16), job.error
    assert ItemScore.objects.filter(reward_model=model).count() == 16
    for score in ItemScore.objects.filter(reward_model=model):
        assert score.probability_b == pytest.approx(1 / (1 + math.exp(-score.margin / calibration["temperature"])))
    page = admin.get(run_url(run), HTTP_HX_REQUEST="true")
    assert page.status_code == 286
    assert "claimed by pid" in page.content.decode()


@pytest.mark.django_db
def test_the_review_queue_shows_where_the_active_model_contradicts_the_annotators(login):
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    model = make_model(make_run(project, version, status="succeeded"))
    reward_model_promote(reward_model=model)
    contradicted, agreeing, unsure = (ItemFactory(project=project) for _ in range(3))
    for item in (contradicted, agreeing, unsure):
        for strength in (3, 2, -1):  # a sign split, so each is in the queue; the annotators lean to B
            AnnotationFactory(item=item, strength=strength)

    def score(item, margin, probability_b):  # type: ignore[no-untyped-def]
        ItemScore.objects.create(
            item=item, reward_model=model, reward_a=0.0, reward_b=margin, margin=margin, probability_b=probability_b
        )

    score(contradicted, -2.5, 0.08)  # the model prefers A, 92% sure
    score(agreeing, 2.5, 0.92)
    score(unsure, -0.3, 0.35)  # prefers A, but only 65% sure: below the project's threshold of 0.8
    curator = login(member(project, Role.CURATOR))
    content = curator.get(reverse("curation:review_queue", args=[project.pk])).content.decode()
    assert content.count('class="reason reason-model"') == 1
    assert "model prefers A with p = 0.92, reward B − A -2.50" in content
    assert content.count('data-testid="model-score">P(B)') == 3  # every item shows the model's view
    # Curators see the threshold and set it: at 0.6 the unsure item counts too.
    assert 'name="threshold"' in content
    assert (
        curator.post(reverse("curation:review_threshold", args=[project.pk]), {"threshold": "0.6"}).status_code == 302
    )
    content = curator.get(reverse("curation:review_queue", args=[project.pk])).content.decode()
    assert content.count('class="reason reason-model"') == 2
    assert (
        curator.post(reverse("curation:review_threshold", args=[project.pk]), {"threshold": "0.3"}).status_code == 302
    )
    project.refresh_from_db()
    assert project.model_threshold == 0.6  # out of range: refused
    # The item and adjudication pages show the score too.
    for name in ("curation:adjudicate", "annotate:item_detail"):
        page = curator.get(reverse(name, args=[project.pk, contradicted.pk])).content.decode()
        assert "model prefers A with p = 0.92" in page
        assert "It contradicts the annotators" in page
    # A model that is no longer active stops counting.
    RewardModel.objects.filter(pk=model.pk).update(is_active=False)
    page = curator.get(reverse("curation:review_queue", args=[project.pk]))
    assert "reason-model" not in page.content.decode()


@pytest.mark.django_db
def test_a_model_measured_on_too_few_held_out_pairs_is_not_promoted_unless_the_admin_insists(login, settings):
    settings.CONCORD_MIN_HELDOUT_PAIRS = 50
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    tiny = make_model(make_run(project, version, status="succeeded"), model_card={"metrics": {"heldout_pairs": 1}})
    admin = login(member(project, Role.ADMIN))
    page = admin.get(run_url(tiny.run)).content.decode()
    assert "measured on 1 pair, fewer than the 50 it takes" in page
    refused = admin.post(run_url(tiny.run, "run_promote"), follow=True).content.decode()
    assert "Not promoted. Its held-out accuracy was measured on 1 pair" in refused
    tiny.refresh_from_db()
    assert not tiny.is_active
    with pytest.raises(TrainingError, match="fewer than the 50"):
        reward_model_promote(reward_model=tiny)
    assert admin.post(run_url(tiny.run, "run_promote"), {"despite_warning": "1"}).status_code == 302
    tiny.refresh_from_db()
    assert tiny.is_active
    assert "measured on 1 pair" in tiny.model_card["promoted_despite"]
    # Plenty of pairs, but no test split: measured on the validation pairs it was calibrated on.
    flattered = make_model(
        make_run(project, version, status="succeeded"),
        model_card={"metrics": {"heldout_pairs": 500, "heldout_split": "validation"}},
    )
    with pytest.raises(TrainingError, match="no test split"):
        reward_model_promote(reward_model=flattered)


# evaluate_model.


@pytest.mark.django_db
def test_evaluate_model_reads_any_importable_preference_file(tmp_path, capsys, trained_model_dir):
    project = ProjectFactory()
    run = make_run(project, frozen_version(project, count=4), status="succeeded")
    model = RewardModel.objects.create(project=project, run=run, path=str(trained_model_dir), model_card={})
    trl = tmp_path / "pairs.trl.jsonl"
    trl.write_text(
        "\n".join(
            json.dumps({"prompt": [{"role": "user", "content": f"q {n}?"}], "chosen": "yes, good.", "rejected": "no."})
            for n in range(4)
        )
    )
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"prompt": "q?", "response_a": "no.", "response_b": "yes, good.", "label": 1, "id": str(n)} for n in range(3)
    ]
    rows.append({"prompt": "q?", "response_a": "a", "response_b": "b", "id": "tie", "label": 0})
    pairs.write_text("\n".join(json.dumps(row) for row in rows))
    call_command("evaluate_model", "--model", str(model.pk), "--format", "trl", str(trl))
    by_id = json.loads(capsys.readouterr().out)
    assert by_id["pairs"] == 4
    assert 0 <= by_id["accuracy"] <= 1
    call_command("evaluate_model", "--model", str(trained_model_dir), "--format", "pairs", str(pairs))
    by_path = json.loads(capsys.readouterr().out)
    assert by_path["pairs"] == 3  # the tie is left out
    assert "length_baseline_accuracy" in by_path
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="no reward model"):
        call_command("evaluate_model", "--model", "999999", "--format", "trl", str(trl))


def test_nothing_on_the_web_side_imports_torch():
    import subprocess
    import sys

    code = (
        "import django, sys; django.setup(); "
        "import training.tasks, training.views, training.services.runs, training.management.commands.evaluate_model; "
        "import concord.urls; print('torch' in sys.modules)"
    )
    env = {"DJANGO_SETTINGS_MODULE": "concord.settings.test", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.django_db
def test_a_stale_run_can_be_sent_to_a_worker_again(login, no_enqueue, django_capture_on_commit_callbacks):
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    long_ago = timezone.now() - timedelta(hours=1)
    stale = make_run(project, version, status="running", step=3, total_steps=10, heartbeat_at=long_ago)
    fresh = make_run(project, version, status="running", heartbeat_at=timezone.now())
    admin = login(member(project, Role.ADMIN))
    assert 'id="run-stale"' in admin.get(run_url(stale)).content.decode()
    assert 'id="run-stale"' not in admin.get(run_url(fresh)).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        assert admin.post(run_url(stale, "run_resume")).status_code == 302
    assert no_enqueue == [(jobs.TRAINING_RUN, stale.pk)]
    finished = make_run(project, version, status="succeeded")
    assert "only a queued or running run" in admin.post(run_url(finished, "run_resume"), follow=True).content.decode()


@pytest.mark.django_db(transaction=True)
def test_a_run_on_a_live_worker_is_neither_resumed_nor_run_twice(no_enqueue):
    project = ProjectFactory()
    run = make_run(project, frozen_version(project, count=4), status="running", step=4)
    with held_by_a_live_worker((locks.TRAINING, run.pk)):
        with pytest.raises(TrainingError, match="live worker"):
            training_run_resume(run=run)
        # A second delivery of its task leaves it alone: no claim, no log line, no change.
        training_run_execute(run=TrainingRun.objects.get(pk=run.pk))
        after = TrainingRun.objects.get(pk=run.pk)
        assert (after.status, after.step, after.log) == ("running", 4, "")
    assert not no_enqueue


@pytest.mark.django_db
def test_progress_counts_an_ensemble_s_members_in_one_run_and_is_throttled(monkeypatch):
    from types import SimpleNamespace

    from training.services import runs as run_services

    project = ProjectFactory()
    run = make_run(project, frozen_version(project, count=4), status="running")
    reporter = run_services._Reporter(run, members=2)

    def update(member, step, loss, accuracy=None):  # type: ignore[no-untyped-def]
        return SimpleNamespace(
            step=step, total_steps=10, epoch=0, member=member, loss=loss, eval_accuracy=accuracy, tokens_per_second=5.0
        )

    reporter.progress(update(0, 10, 0.5))
    reporter.progress(update(0, 10, None, 0.75))  # the epoch's evaluation, at the same step
    reporter.progress(update(1, 1, 0.9))
    reporter.progress(update(1, 2, float("nan")))
    run.refresh_from_db()
    assert (run.step, run.total_steps) == (10, 20)  # written once: the rest waits for the next second
    reporter.flush()
    run.refresh_from_db()
    assert (run.step, run.total_steps, run.loss, run.eval_accuracy) == (12, 20, None, 0.75)
    assert run.history == [
        {"step": 10, "loss": 0.5, "eval_accuracy": 0.75},
        {"step": 11, "loss": 0.9, "eval_accuracy": None},
        {"step": 12, "loss": None, "eval_accuracy": None},
    ]
    assert not reporter.should_stop()
    training_run_cancel(run=run)
    monkeypatch.setattr(run_services, "PROGRESS_INTERVAL_S", 0.0)
    assert reporter.should_stop()


@pytest.mark.django_db
def test_items_the_annotators_agree_on_enter_the_queue_when_the_model_confidently_disagrees() -> None:
    from curation.selectors_review import disagreement_queue
    from training.services.review_sync import review_queue_bring_up_to_date

    project = ProjectFactory()
    model = make_model(make_run(project, frozen_version(project, count=4), status="succeeded"))
    reward_model_promote(reward_model=model)
    agreed = ItemFactory(project=project)
    for strength in (2, 3, 1):  # everyone prefers B
        AnnotationFactory(item=agreed, strength=strength)
    assert not [row for row in disagreement_queue(project=project) if row["id"] == agreed.pk]
    ItemScore.objects.create(
        item=agreed, reward_model=model, reward_a=1.0, reward_b=-2.0, margin=-3.0, probability_b=0.05
    )
    assert review_queue_bring_up_to_date(project=project, model=queue_model(project))  # a small project: in this call
    queued = {row["id"] for row in disagreement_queue(project=project, reason="model", model=queue_model(project))}
    assert agreed.pk in queued
    assert agreed.pk in {row["id"] for row in disagreement_queue(project=project, model=queue_model(project))}


@pytest.mark.django_db
def test_the_runs_page_plots_each_model_s_held_out_accuracy(login):
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    cards = [
        {"config": {"objective": "bt"}, "metrics": {"heldout": {"accuracy": 0.6}, "length_baseline_accuracy": 0.45}},
        {"config": {"objective": "regression"}, "metrics": {"heldout": {"accuracy": 0.8}}},
        {"config": {"objective": "bt"}, "metrics": {"heldout_pairs": 0}},  # no held-out split: no bar
    ]
    models = [make_model(make_run(project, version, status="succeeded"), model_card=card) for card in cards]
    admin = login(member(project, Role.ADMIN))
    page = admin.get(list_url(project)).content.decode()
    chart = page[page.index('<svg id="heldout-chart"') : page.index("</svg>", page.index('id="heldout-chart"'))]
    widths = {
        int(m): int(w)
        for m, w in re.findall(r'data-model="(\d+)">.*?<rect class="bar" [^>]*width="(\d+)"', chart, re.S)
    }
    assert widths == {models[0].pk: 240, models[1].pk: 320}  # 0.6 and 0.8 of 400 pixels
    assert f"run #{models[1].run_id} · regression" in chart
    assert chart.count('stroke="#333"') == 1  # the one length baseline tick, at 0.45 x 400 + 150
    assert 'x1="330"' in chart
