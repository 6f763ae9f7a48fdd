"""Selective annotation end to end: an admin picks a strategy on the selection page, a selection job ranks the
unlabelled pool with the active reward model, and annotators' next items follow the ranks."""

import uuid

import numpy as np
import pytest
from celery.contrib.testing.worker import start_worker
from django.db import transaction
from django.urls import reverse

from annotate.labels import Labels
from annotate.models import Item, Role
from annotate.services.labeling import annotation_submit, assignment_next
from concord import jobs
from concord.celery import app as celery_app
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.jobs import private_queue
from tests.training.test_runs import make_model, make_run
from tests.training.test_scoring import project_with_active_model
from tests.waits import HANG_GUARD_S, wait_for
from training import tasks
from training.ml.data import prompt_with_context
from training.ml.model import reward_head
from training.ml.scoring import RewardScorer
from training.models import RewardModel, SelectionPolicy, SelectionRun
from training.services.scoring import reward_model_promote
from training.services.selection import selection_run_create, selection_runs_due

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def commits_at_once(monkeypatch):  # type: ignore[no-untyped-def]
    """What services defer to the commit runs at once (a test's transaction never commits), so the selection
    tasks they send reach sent_jobs as they are sent."""
    monkeypatch.setattr(transaction, "on_commit", lambda func, using=None, robust=False: func())


def page_url(project) -> str:  # type: ignore[no-untyped-def]
    return reverse("training:selection", args=[project.pk])


def policy_url(project) -> str:  # type: ignore[no-untyped-def]
    return reverse("training:selection_update", args=[project.pk])


def run_url(project) -> str:  # type: ignore[no-untyped-def]
    return reverse("training:selection_run_start", args=[project.pk])


def policy_data(strategy: str, **fields: object) -> dict[str, object]:
    data: dict[str, object] = {
        "strategy": strategy,
        "batch_size": 4,
        "random_share": 0,
        "pool_limit": 1000,
        "every_labels": 0,
        "after_promotion": "on",
    }
    data.update(fields)
    return data


def run_sent(sent_jobs) -> list[SelectionRun]:  # type: ignore[no-untyped-def]
    """Run every selection task sent so far, as the worker would; returns the runs."""
    ran = []
    while sent_jobs:
        name, run_id = sent_jobs.pop(0)
        if name != jobs.SELECTION:
            continue
        tasks.selection_run_task(run_id)
        ran.append(SelectionRun.objects.get(pk=run_id))
    return ran


def margins_of(model_path, items) -> dict[int, float]:  # type: ignore[no-untyped-def]
    """Each item's margin (B minus A) by the model, computed here from its own scorer."""
    pairs = [(prompt_with_context(i.prompt, i.context), i.response_a, i.response_b) for i in items]
    signals = RewardScorer(model_path, batch_size=8, max_length=64).pair_signals(pairs)
    return {item.pk: float(m) for item, m in zip(items, signals.margins, strict=True)}


def label_next(project, annotator) -> Item:  # type: ignore[no-untyped-def]
    item = assignment_next(project=project, annotator=annotator)
    assert item is not None
    annotation_submit(
        item=item,
        annotator=annotator,
        labels=Labels(strength=1, justification=""),
        seconds_spent=1.0,
        submission_uuid=uuid.uuid4(),
    )
    return item


def test_an_admin_picks_uncertainty_and_annotators_get_the_least_certain_items_first(
    login, sent_jobs, trained_model_dir
):
    project, _, later, model = project_with_active_model(trained_model_dir)
    pool = later + [ItemFactory(project=project, response_b=f"a longer answer number {n}.") for n in range(6)]
    admin = login(member(project, Role.ADMIN))
    response = admin.post(policy_url(project), policy_data("uncertainty"), follow=True)
    assert "the pool is being ranked on a worker" in response.content.decode()
    (run,) = run_sent(sent_jobs)
    assert (run.status, run.strategy, run.reason, run.reward_model) == ("done", "uncertainty", "policy", model)
    assert (run.pool, run.picked) == (len(pool), 4), run.error
    # The four ranked are the four least certain (their |margin| the four smallest: the tiny model's margins are
    # close together, so compared as values, not as which item of a near tie), the least certain ranked first.
    margins = margins_of(trained_model_dir, pool)
    ranked = list(Item.objects.filter(selection_rank__gt=0).order_by("-selection_rank").values_list("pk", flat=True))
    np.testing.assert_allclose([abs(margins[pk]) for pk in ranked], sorted(map(abs, margins.values()))[:4], atol=1e-6)
    # One annotator labels in that order, then goes on with the queue's own order.
    annotator = member(project)
    handed = [label_next(project, annotator).pk for _ in range(5)]
    assert handed[:4] == ranked
    assert handed[4] not in ranked
    page = admin.get(page_url(project)).content.decode()
    assert 'data-strategy="uncertainty"' in page
    assert "Priorities last computed" in page
    assert f"the model of run #{model.run_id}" in page
    assert '<strong id="waiting-count">0</strong>' in page


def test_random_needs_no_model_and_the_queue_order_takes_every_rank_back(login, sent_jobs):
    project = ProjectFactory(overlap=1)
    items = ItemFactory.create_batch(8, project=project)
    admin = login(member(project, Role.ADMIN))
    assert admin.post(policy_url(project), policy_data("random", batch_size=3)).status_code == 302
    (run,) = run_sent(sent_jobs)
    assert (run.status, run.picked, run.pool, run.reward_model) == ("done", 3, 8, None)
    ranks = sorted(Item.objects.filter(selection_rank__gt=0).values_list("selection_rank", flat=True))
    assert ranks == [1, 2, 3]
    # Ranking again replaces the ranks rather than adding to them.
    assert admin.post(run_url(project)).status_code == 302
    run_sent(sent_jobs)
    assert Item.objects.filter(selection_rank__gt=0).count() == 3
    assert admin.post(policy_url(project), policy_data("")).status_code == 302
    assert not sent_jobs
    assert not Item.objects.filter(selection_rank__gt=0).exists()
    assert len(items) == Item.objects.filter(project=project).count()
    assert (
        "queue order (least annotated first)"
        in admin.get(reverse("annotate:project_queue", args=[project.pk])).content.decode()
    )


def test_a_new_selection_carries_started_items_above_its_batch_and_leaves_other_projects_alone(sent_jobs):
    project, other = ProjectFactory(overlap=2), ProjectFactory()
    ItemFactory.create_batch(12, project=project)
    elsewhere = ItemFactory(project=other)
    Item.objects.filter(pk=elsewhere.pk).update(selection_rank=7)
    SelectionPolicy.objects.create(project=project, strategy="random", batch_size=3, random_share=0)
    run_sent([(jobs.SELECTION, selection_run_create(project=project, reason="manual").pk)])
    first_batch = list(Item.objects.filter(project=project, selection_rank__gt=0).order_by("-selection_rank"))
    started = first_batch[1]
    AnnotationFactory(item=started)  # one of its two annotations
    run_sent([(jobs.SELECTION, selection_run_create(project=project, reason="manual").pk)])
    ranks = dict(Item.objects.filter(project=project, selection_rank__gt=0).values_list("pk", "selection_rank"))
    assert ranks[started.pk] == 4, "the started item stays ranked, above the new batch of three"
    assert sorted(rank for pk, rank in ranks.items() if pk != started.pk) == [1, 2, 3]
    assert Item.objects.get(pk=elsewhere.pk).selection_rank == 7
    annotator = member(project)
    assert label_next(project, annotator) == started


def test_a_strategy_that_reads_a_model_waits_for_one_and_says_so(login, sent_jobs):
    project = ProjectFactory()
    ItemFactory.create_batch(3, project=project)
    admin = login(member(project, Role.ADMIN))
    saved = admin.post(policy_url(project), policy_data("fisher"), follow=True).content.decode()
    assert "Nothing is ranked until it can run: the fisher strategy reads the active reward model" in saved
    assert not sent_jobs
    assert not SelectionRun.objects.exists()
    assert 'data-testid="selection-blocked"' in saved
    refused = admin.post(run_url(project))
    assert refused.status_code == 422
    assert "promote a trained model first" in refused.content.decode()
    assert not SelectionRun.objects.exists()


def test_bad_settings_are_refused_by_name_and_nothing_is_saved(login, sent_jobs):
    project = ProjectFactory()
    admin = login(member(project, Role.ADMIN))
    response = admin.post(policy_url(project), policy_data("random", random_share=1.5, batch_size=0))
    assert response.status_code == 422
    page = response.content.decode()
    assert "must be between 0 and 1" in page
    assert "must be between 1 and 10,000" in page
    unknown = admin.post(policy_url(project), policy_data("oracle"))
    assert unknown.status_code == 422
    assert "Select a valid choice" in unknown.content.decode()
    assert not SelectionPolicy.objects.exists()
    assert not sent_jobs


def test_only_the_project_s_admin_may_change_the_strategy(login, sent_jobs):
    project = ProjectFactory()
    for role in (Role.ANNOTATOR, Role.CURATOR):
        user = login(member(project, role))
        assert user.post(policy_url(project), policy_data("random")).status_code == 403
        assert user.get(page_url(project)).status_code == 403
    outsider = login(member(ProjectFactory(), Role.ADMIN))
    assert outsider.post(policy_url(project), policy_data("random")).status_code == 404
    assert not SelectionPolicy.objects.exists()
    assert not sent_jobs


def test_promoting_a_model_ranks_the_pool_again_when_the_policy_says_so(sent_jobs, trained_model_dir):
    project, version, _, first = project_with_active_model(trained_model_dir)
    SelectionPolicy.objects.create(project=project, strategy="uncertainty", batch_size=2, after_promotion=True)
    second = make_model(make_run(project, version, status="succeeded"))
    RewardModel.objects.filter(pk=second.pk).update(path=str(trained_model_dir))
    reward_model_promote(reward_model=second)
    (run,) = run_sent(sent_jobs)
    assert (run.reason, run.reward_model, run.status, run.picked) == ("promotion", second, "done", 2), run.error
    SelectionPolicy.objects.filter(project=project).update(after_promotion=False)
    reward_model_promote(reward_model=first)
    assert not sent_jobs


def test_enough_new_labels_start_a_selection_and_fewer_do_not(sent_jobs):
    project = ProjectFactory(overlap=1)
    items = ItemFactory.create_batch(10, project=project)
    SelectionPolicy.objects.create(project=project, strategy="random", batch_size=2, every_labels=3)
    (first,) = selection_runs_due()  # never selected: due at once
    run_sent(sent_jobs)
    for item in items[:2]:
        AnnotationFactory(item=item)
    assert selection_runs_due() == []
    AnnotationFactory(item=items[2])
    (second,) = selection_runs_due()
    # Asked again while it waits: the same run, nothing sent twice.
    assert selection_run_create(project=project, reason="manual") == second
    assert selection_runs_due() == []
    assert len(sent_jobs) == 1
    run_sent(sent_jobs)
    second.refresh_from_db()
    first.refresh_from_db()
    assert (second.reason, second.status, second.labels_at_start, first.labels_at_start) == ("labels", "done", 3, 0)


def test_a_selection_delivered_twice_ranks_once(sent_jobs):
    project = ProjectFactory()
    ItemFactory.create_batch(5, project=project)
    SelectionPolicy.objects.create(project=project, strategy="random", batch_size=2)
    run = selection_run_create(project=project, reason="manual")
    tasks.selection_run_task(run.pk)
    done_at = SelectionRun.objects.get(pk=run.pk).finished_at
    ranked = dict(Item.objects.filter(selection_rank__gt=0).values_list("pk", "selection_rank"))
    tasks.selection_run_task(run.pk)
    assert SelectionRun.objects.get(pk=run.pk).finished_at == done_at
    assert dict(Item.objects.filter(selection_rank__gt=0).values_list("pk", "selection_rank")) == ranked


def test_the_learning_curve_plots_each_model_against_the_labels_spent(login, trained_model_dir):
    project, version, _, model = project_with_active_model(trained_model_dir)
    card = {"metrics": {"heldout_pairs": 200, "heldout": {"accuracy": 0.75}}}
    model.model_card = card
    model.save()
    page = login(member(project, Role.ADMIN)).get(page_url(project)).content.decode()
    labels = version.rows.count() * 2  # frozen_version: two annotations per labelled item, all before the freeze
    assert f'data-labels="{labels}" data-accuracy="0.7500"' in page
    assert 'id="learning-curve"' in page


def test_pair_signals_agree_with_the_scores_for_encoders_and_decoders(backbones):
    pairs = [([{"role": "user", "content": f"question {n}?"}], "no.", f"yes, answer {n} is good.") for n in range(5)]
    for architecture in ("bert", "gpt2"):
        scorer = RewardScorer(backbones[architecture], batch_size=2, max_length=32)
        signals = scorer.pair_signals(pairs)
        scores = scorer.score_pairs(pairs)
        np.testing.assert_allclose(signals.margins, [-s.margin for s in scores], rtol=1e-4, atol=1e-5)
        assert signals.member_margins.shape == (5, 1)
        assert signals.features.shape == signals.embeddings.shape == (5, scorer.members[0][0].config.hidden_size)
        np.testing.assert_allclose(np.linalg.norm(signals.embeddings, axis=1), 1, rtol=1e-5)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_closes_connections")
def test_a_selection_runs_on_a_real_worker_with_the_active_model(login, monkeypatch, trained_model_dir):
    project, _, later, _ = project_with_active_model(trained_model_dir)
    admin = login(member(project, Role.ADMIN))
    queue = private_queue(monkeypatch, jobs.SELECTION)
    with start_worker(celery_app, perform_ping_check=False, queues=[queue], shutdown_timeout=HANG_GUARD_S):
        assert admin.post(policy_url(project), policy_data("coverage", batch_size=2)).status_code == 302
        wait_for(lambda: SelectionRun.objects.get().finished)
    run = SelectionRun.objects.get()
    assert (run.status, run.picked, run.pool) == ("done", 2, len(later)), run.error
    assert set(Item.objects.filter(selection_rank__gt=0).values_list("pk", flat=True)) <= {i.pk for i in later}


def test_disagreement_needs_an_ensemble_and_says_so(login, sent_jobs, trained_model_dir):
    project, *_ = project_with_active_model(trained_model_dir)
    admin = login(member(project, Role.ADMIN))
    refused = admin.post(policy_url(project), policy_data("disagreement"))
    assert refused.status_code == 422
    assert "the active model is a single model" in refused.content.decode()
    assert not SelectionPolicy.objects.exists()
    assert not sent_jobs


def test_a_policy_changed_while_a_selection_waits_or_runs_is_the_one_applied(sent_jobs):
    project = ProjectFactory(overlap=1)
    ItemFactory.create_batch(10, project=project)
    SelectionPolicy.objects.create(project=project, strategy="random", batch_size=2, random_share=0)
    waiting = selection_run_create(project=project, reason="manual")
    SelectionPolicy.objects.filter(project=project).update(batch_size=3)
    assert selection_run_create(project=project, reason="manual") == waiting
    waiting.refresh_from_db()
    assert waiting.batch_size == 3, "a waiting selection takes the new settings"
    # Now it runs (a worker claimed it) when the admin changes the batch again.
    SelectionRun.objects.filter(pk=waiting.pk).update(status="running")
    SelectionPolicy.objects.filter(project=project).update(batch_size=4)
    selection_run_create(project=project, reason="manual")
    superseded, successor = run_sent(sent_jobs)  # the successor is sent when the superseded one ends
    assert (superseded.pk, superseded.status, superseded.picked) == (waiting.pk, "failed", 0)
    assert superseded.error.startswith("Not applied: the project's selection policy changed")
    assert (successor.status, successor.batch_size, successor.picked) == ("done", 4, 4)
    assert Item.objects.filter(selection_rank__gt=0).count() == 4


def test_switching_to_the_queue_order_while_a_selection_runs_leaves_no_ranks(login, sent_jobs):
    project = ProjectFactory()
    ItemFactory.create_batch(5, project=project)
    admin = login(member(project, Role.ADMIN))
    admin.post(policy_url(project), policy_data("random", batch_size=2))
    SelectionRun.objects.update(status="running")
    assert admin.post(policy_url(project), policy_data("")).status_code == 302
    (run,) = run_sent(sent_jobs)
    assert run.status == "failed"
    assert not sent_jobs
    assert not Item.objects.filter(selection_rank__gt=0).exists()


def test_a_selection_that_keeps_failing_waits_for_new_labels_before_it_runs_again(sent_jobs, trained_model_dir):
    project, *_ = project_with_active_model(trained_model_dir)
    RewardModel.objects.filter(project=project).update(path="/nowhere/model")
    SelectionPolicy.objects.create(project=project, strategy="uncertainty", batch_size=2, every_labels=5)
    (run,) = selection_runs_due()
    run_sent(sent_jobs)
    run.refresh_from_db()
    assert run.status == "failed"
    assert run.error.startswith("Selection failed:")
    assert selection_runs_due() == []
    assert selection_runs_due() == []
    assert SelectionRun.objects.count() == 1


def test_the_features_are_what_the_reward_head_reads(backbones):
    """margin = w . (h_B - h_A) for the head's weights w: the features come from the position the reward is read
    at, also for a decoder padding with its end-of-sequence token when a response ends with that token."""
    pairs = [([{"role": "user", "content": f"question {n}?"}], "no.", f"yes, answer {n} is good.") for n in range(4)]
    ending = [(prompt, a + " </s>", b + " </s>") for prompt, a, b in pairs]
    for architecture in ("bert", "gpt2", "llama"):
        scorer = RewardScorer(backbones[architecture], batch_size=3, max_length=32)
        weights = reward_head(scorer.members[0][0]).weight[0].detach().numpy()
        for batch in (pairs, ending):
            signals = scorer.pair_signals(batch)
            assert signals.features is not None
            np.testing.assert_allclose(signals.features @ weights, signals.margins, rtol=1e-3, atol=1e-5)
