"""Fixtures for training tests: a tiny random BERT backbone saved to disk (no network), and a frozen version."""

from pathlib import Path

import pytest

from curation.services.versions import dataset_version_create, dataset_version_freeze
from tests.annotate.factories import AnnotationFactory, ItemFactory

WORDS = [
    "the",
    "a",
    "an",
    "is",
    "are",
    "was",
    "good",
    "bad",
    "helpful",
    "harmful",
    "answer",
    "question",
    "yes",
    "no",
    "because",
    "please",
    "thanks",
    "sure",
    "sorry",
    "cannot",
    "will",
    "would",
    "python",
    "code",
    "number",
    "first",
    "second",
    "response",
    "explain",
    "why",
    "how",
    "what",
]


def tiny_backbone_dir(path: Path) -> Path:
    """A 2-layer, 32-wide random BERT with a word-level vocabulary, saved with its tokenizer."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *"abcdefghijklmnopqrstuvwxyz0123456789?.,!"]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    tokenizer.save_pretrained(path)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_backbone_dir(tmp_path_factory.mktemp("tiny-bert"))


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
