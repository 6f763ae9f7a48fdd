"""A curation round survives kill -9 of its gpu worker: the killed worker's training run resumes from its checkpoint
on the next worker, and the round goes on from where it waited to its labelling stage."""

import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings as django_settings

from annotate.models import Role
from concord import jobs
from concord.celery import app as celery_app
from tests.annotate.factories import member
from tests.training.test_campaigns import campaign_project, tiny_campaign
from tests.training.test_kill import VISIBILITY_TIMEOUT_S, broker_url, forget_queue, kill, start_worker, worker_env
from tests.waits import HANG_GUARD_S, wait_for
from training.models import Campaign, CampaignRound, TrainingRun
from training.services.campaigns import campaign_start, campaign_stop
from training.services.runs import checkpoint_step


def decided(round_: CampaignRound) -> bool:
    """The round is past training, scoring and deciding (it may route nothing and go straight on)."""
    current = CampaignRound.objects.get(pk=round_.pk)
    if current.status == CampaignRound.Status.FAILED:
        raise AssertionError(current.error)
    past = (CampaignRound.Stage.LABEL, CampaignRound.Stage.FREEZE, CampaignRound.Stage.DONE)
    return current.stage in past


@pytest.mark.django_db(transaction=True)
def test_a_round_whose_worker_is_killed_mid_training_resumes_on_the_next_worker(
    settings, tmp_path, tiny_backbone, monkeypatch
):
    settings.TRAINING_ROOT = tmp_path / "training"
    queue = f"test-campaign-kill-{uuid.uuid4().hex}"
    # The campaign's first task goes to this test's queue on this test's broker; the workers send the later ones
    # by the test settings' route (test-gpu), on the same broker, which only this test's workers read.
    routed = django_settings.CELERY_TASK_ROUTES["training.tasks.*"]["queue"]

    def send(name: str, job_id: int) -> None:
        with celery_app.connection_for_write(broker_url()) as connection:
            celery_app.send_task(name, args=[job_id], queue=queue, connection=connection)

    monkeypatch.setattr(jobs, "send", send)
    project, _ = campaign_project()
    admin = member(project, Role.ADMIN)
    env = worker_env(settings.TRAINING_ROOT, CONCORD_EMBEDDING_MODEL=str(tiny_backbone))
    workers = [start_worker("first", f"{queue},{routed}", env, tmp_path)]
    try:
        campaign = campaign_start(
            project=project, name="toy", config=tiny_campaign(tiny_backbone, epochs=40), created_by=admin
        )
        round_ = CampaignRound.objects.get(campaign=campaign)
        assert wait_for(lambda: CampaignRound.objects.get(pk=round_.pk).training_run_id is not None)
        run = TrainingRun.objects.get(pk=CampaignRound.objects.get(pk=round_.pk).training_run_id)
        out = Path(run.output_dir)
        sent = time.monotonic()
        # 40 epochs: each member passes checkpoints (every 50 steps) well before it ends.
        assert wait_for(lambda: checkpoint_step(out) > 0), (tmp_path / "first.log").read_text()[-3000:]
        kill(workers[0])
        assert TrainingRun.objects.get(pk=run.pk).status == TrainingRun.Status.RUNNING
        # The unacknowledged task is redelivered after the visibility timeout (what is tested: a wait for a time).
        time.sleep(max(0.0, VISIBILITY_TIMEOUT_S + 0.5 - (time.monotonic() - sent)))
        workers.append(start_worker("second", f"{queue},{routed}", env, tmp_path))
        assert wait_for(lambda: decided(round_), timeout=HANG_GUARD_S), (tmp_path / "second.log").read_text()[-3000:]
    finally:
        for worker in workers:
            kill(worker)
        forget_queue(queue)
        forget_queue(routed)
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.SUCCEEDED, (run.error, run.log)
    assert run.metrics["resumed_from"] > 0
    claims = [line for line in run.log.splitlines() if "claimed by" in line]
    assert len(claims) == 2, run.log
    round_.refresh_from_db()
    assert round_.decisions.exists()
    assert round_.error == ""
    if Campaign.objects.get(pk=campaign.pk).status == Campaign.Status.RUNNING:
        campaign_stop(campaign=campaign, by=admin)
    assert not project.items.filter(priority__gt=0).exists()
