"""Fixtures for training tests: a tiny random BERT backbone saved to disk (no network), and a frozen version."""

from pathlib import Path

import pytest

from curation.services.versions import dataset_version_create, dataset_version_freeze
from tests.annotate.factories import AnnotationFactory, ItemFactory


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT saved with its word-level tokenizer (training.ml.tiny)."""
    from training.ml.tiny import tiny_backbone as build

    return build(tmp_path_factory.mktemp("tiny-bert"))


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
