"""Fixtures for training tests: one torch thread, tiny random backbones saved to disk (no network), a frozen
version, and what a test needs to run the training tasks on a real Celery worker in a thread."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from celery.signals import task_postrun
from django.db import connections

from curation.services.versions import dataset_version_create, dataset_version_freeze
from tests.annotate.factories import AnnotationFactory, ItemFactory


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """One torch thread: on a two-core machine shared with other work (the browser test's worker with Chromium and
    the live server), tiny models run many times slower with two."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def model_roots(settings, tmp_path_factory: pytest.TempPathFactory) -> list[str]:  # type: ignore[no-untyped-def]
    """The session's temporary directory is a model root (CONCORD_MODEL_ROOTS), as a deployment's model directory
    would be: the tiny backbones below, and the models runs train there, are allowed backbones. A test of the
    allow-list itself sets the roots it means."""
    settings.CONCORD_MODEL_ROOTS = [str(tmp_path_factory.getbasetemp())]
    return list(settings.CONCORD_MODEL_ROOTS)


@pytest.fixture(scope="session")
def backbones(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random models of each architecture the ML tests use: an encoder and two decoders."""
    from training.ml.tiny import tiny_backbone as build

    root = tmp_path_factory.mktemp("backbones")
    return {arch: build(root / arch, architecture=arch) for arch in ("bert", "gpt2", "llama")}


@pytest.fixture(scope="session")
def tiny_backbone(backbones: dict[str, Path]) -> Path:
    """A 2-layer, 32-wide random BERT saved with its word-level tokenizer (training.ml.tiny)."""
    return backbones["bert"]


def labelled_items(project, count: int):  # type: ignore[no-untyped-def]
    """Items two annotators agree on: even ones prefer B (the longer, helpful answer), odd ones A."""
    items = []
    for n in range(count):
        good, bad = f"yes, the answer is {n} because it is good.", "no."
        a, b = (bad, good) if n % 2 == 0 else (good, bad)
        item = ItemFactory(
            project=project,
            prompt=[{"role": "user", "content": f"what is the number {n}?"}],
            response_a=a,
            response_b=b,
        )
        sign = 1 if n % 2 == 0 else -1
        AnnotationFactory(item=item, strength=2 * sign)
        AnnotationFactory(item=item, strength=3 * sign)
        items.append(item)
    return items


def frozen_version(project, count: int = 12, **filters):  # type: ignore[no-untyped-def]
    labelled_items(project, count)
    filters.setdefault("splits", {"train": 0.6, "validation": 0.2, "test": 0.2})
    version = dataset_version_create(name="rm data", projects=[project], filters=filters, created_by=None)
    return dataset_version_freeze(version=version)


@pytest.fixture
def worker_closes_connections():  # type: ignore[no-untyped-def]
    """A worker thread's database connections are closed after each task, so the test database can be flushed."""

    def close(**_: object) -> None:
        connections.close_all()

    task_postrun.connect(close, weak=False)
    yield
    task_postrun.disconnect(close)  # type: ignore[attr-defined]  # celery-types leaves it out


@pytest.fixture
def trained_model_dir(tmp_path: Path, tiny_backbone: Path) -> Path:
    """A tiny model trained for a step on a toy task (yes-answers beat no), saved as the trainer saves it."""
    from training.ml.config import TrainConfig
    from training.ml.data import PairExample
    from training.ml.trainer import train

    examples = [
        PairExample(prompt=[{"role": "user", "content": f"question {n}?"}], chosen="yes, good answer.", rejected="no.")
        for n in range(8)
    ]
    config = TrainConfig(backbone=str(tiny_backbone), epochs=1, batch_size=4, max_length=32, learning_rate=1e-3)
    out = tmp_path / "model"
    train(config, examples, examples[:2], output_dir=out)
    return out
