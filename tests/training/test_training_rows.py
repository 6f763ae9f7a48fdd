"""What a training run reads is the whole dataset row: ratings, weights and context reach the trainer. A regression
run started from the web app learns its attributes, and a row's weight changes its loss."""

import json
from pathlib import Path

import pytest
from celery.contrib.testing.worker import start_worker
from django.urls import reverse

from annotate.models import Role
from concord import jobs
from concord.celery import app as celery_app
from curation.services.versions import dataset_version_create, dataset_version_freeze
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.jobs import private_queue
from tests.waits import HANG_GUARD_S, wait_for
from training.models import TrainingRun
from training.services.runs import training_examples

SCHEMA = {
    "preference": {"enabled": True, "scale": "seven", "justification": "optional", "justification_min_chars": 0},
    "attributes": [{"name": "helpfulness", "description": "", "min": 0, "max": 4}],
    "spans": {"enabled": False, "categories": [], "missing": []},
    "correction": {"enabled": False},
}


def good(n: int) -> str:
    return f"yes the answer is {n % 10} because it is good and helpful"


def bad(n: int) -> str:
    return f"no {n % 10}"


def rated_items(project, count: int, *, disputed_every: int = 0, varied: bool = False) -> None:  # type: ignore[no-untyped-def]
    """Items whose helpful answer two annotators rate 4 and the curt one 0 (or, `varied`, 4 - n % 3 and n % 3),
    and prefer; with some context. Every `disputed_every`-th item gets a third annotator who prefers the other
    side (a dispute)."""
    annotators = [member(project) for _ in range(3)]
    for n in range(count):
        a_good = n % 2 == 0
        item = ItemFactory(
            project=project,
            prompt=[{"role": "user", "content": f"question {n} please"}],
            context=f"the question is number {n}",
            response_a=good(n) if a_good else bad(n),
            response_b=bad(n) if a_good else good(n),
        )
        high, low = (4 - n % 3, n % 3) if varied else (4, 0)
        ratings = {"a": {"helpfulness": high if a_good else low}, "b": {"helpfulness": low if a_good else high}}
        strength = -2 if a_good else 2
        for annotator in annotators[:2]:
            AnnotationFactory(item=item, annotator=annotator, strength=strength, ratings=ratings)
        if disputed_every and n % disputed_every == 0:
            AnnotationFactory(item=item, annotator=annotators[2], strength=-strength, ratings=ratings)


def freeze(project, **filters):  # type: ignore[no-untyped-def]
    filters.setdefault("splits", {"train": 0.6, "validation": 0.2, "test": 0.2})
    draft = dataset_version_create(name="rated", projects=[project], filters=filters, created_by=None)
    return dataset_version_freeze(version=draft)


@pytest.mark.django_db
def test_the_training_examples_carry_every_field_of_a_row(tmp_path: Path) -> None:
    project = ProjectFactory(overlap=2, schema=SCHEMA)
    rated_items(project, 12, disputed_every=3)
    version = freeze(project, states=["agreed", "disputed"])
    splits = training_examples(version=version, out=tmp_path, seed=0)
    examples = splits.train + splits.validation + splits.test
    rows = {row.chosen + row.rejected + row.prompt[0]["content"]: row for row in version.rows.all()}
    assert len(examples) == len(rows) == 12
    for example in examples:
        row = rows[example.chosen + example.rejected + example.prompt[-1]["content"]]
        assert example.weight == row.weight
        assert example.prompt[0] == {"role": "system", "content": row.context}  # the context comes first
        assert example.chosen_ratings == {"helpfulness": 4.0}
        assert example.rejected_ratings == {"helpfulness": 0.0}
    assert {example.weight for example in examples} == {1.0, 0.6667}  # disputed rows count for less
    written = [json.loads(line) for line in (tmp_path / "data.jsonl").read_text().splitlines()]
    assert all(row["labels"]["chosen"]["ratings"] == {"helpfulness": 4.0} for row in written)


@pytest.mark.django_db
def test_a_row_s_weight_changes_its_loss(tmp_path: Path, tiny_backbone: Path) -> None:
    import torch

    from training.ml.config import TrainConfig
    from training.ml.data import PairCollator, encode_pairs
    from training.ml.model import load_reward_model, reward_outputs
    from training.ml.trainer import objective_loss

    project = ProjectFactory(overlap=2, schema=SCHEMA)
    # Rated differently, so that each pair's loss differs and weighting them moves the mean.
    rated_items(project, 12, disputed_every=3, varied=True)
    splits = training_examples(version=freeze(project, states=["agreed", "disputed"]), out=tmp_path, seed=0)
    examples = splits.train + splits.validation + splits.test
    config = TrainConfig(backbone=str(tiny_backbone), objective="combined", attributes=("helpfulness",), max_length=32)
    model, tokenizer = load_reward_model(tiny_backbone, num_outputs=config.num_outputs)
    batch = PairCollator(tokenizer)(encode_pairs(examples, tokenizer, max_length=32, attributes=config.attributes))
    with torch.no_grad():
        outputs = reward_outputs(model, batch)
        weighted = objective_loss(config, outputs, batch)
        unweighted = objective_loss(config, outputs, {**batch, "weight": torch.ones_like(batch["weight"])})
    assert sorted(set(batch["weight"].tolist())) == pytest.approx([0.6667, 1.0])
    assert batch["target_mask"].sum() > 0  # the attribute head has targets: every rating reached it
    assert abs(float(weighted) - float(unweighted)) > 0.01, (float(weighted), float(unweighted))


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_closes_connections")
def test_a_regression_run_started_over_http_learns_its_attributes(
    login, monkeypatch, settings, tmp_path, tiny_backbone
):
    settings.TRAINING_ROOT = tmp_path / "training"
    project = ProjectFactory(overlap=2, schema=SCHEMA)
    rated_items(project, 40)
    version = freeze(project)
    admin = login(member(project, Role.ADMIN))
    form = admin.get(reverse("training:run_list", args=[project.pk])).context["form"]
    assert form.fields["attributes"].initial == ["helpfulness"]  # offered from the project's schema
    data = {
        "dataset_version": version.pk,
        "backbone": str(tiny_backbone),
        "objective": "regression",
        "attributes": ["helpfulness"],
        "epochs": 30,
        "batch_size": 4,
        "learning_rate": "0.003",
        "max_length": 32,
        "ensemble_size": 1,
        "seed": 0,
    }
    queue = private_queue(monkeypatch, jobs.TRAINING_RUN)
    with start_worker(celery_app, perform_ping_check=False, queues=[queue], shutdown_timeout=HANG_GUARD_S):
        response = admin.post(reverse("training:run_create", args=[project.pk]), data)
        assert response.status_code == 302, response.content.decode()[-2000:]
        run = TrainingRun.objects.get()
        assert wait_for(lambda: TrainingRun.objects.get(pk=run.pk).finished, timeout=HANG_GUARD_S)
    run.refresh_from_db()
    assert run.status == "succeeded", (run.error, run.log)
    assert run.config["attributes"] == ["helpfulness"]
    heldout = run.metrics["heldout"]
    learnt, constant = heldout["attribute_rmse"]["helpfulness"], heldout["attribute_constant_rmse"]["helpfulness"]
    assert learnt < constant, (learnt, constant)
    page = admin.get(reverse("training:run_detail", args=[project.pk, run.pk])).content.decode()
    assert 'id="attribute-rmse"' in page
