"""Loading dataset-version exports, splitting by prompt, length-grouped batches and the one-pass collator."""

import gzip
import json
from pathlib import Path

import pytest
import torch

from training.ml.data import (
    PairCollator,
    encode_pairs,
    length_grouped_batches,
    load_examples,
    split_by_prompt,
)
from training.ml.tiny import tiny_backbone, toy_pairs

PROMPT = [{"role": "user", "content": "why?"}]


def trl_line(n: int) -> dict:
    # The object curation.services.version_exports.trl_row builds.
    return {
        "prompt": PROMPT if n % 2 else [{"role": "user", "content": f"q{n}"}],
        "chosen": [{"role": "assistant", "content": f"yes {n}"}],
        "rejected": [{"role": "assistant", "content": "no"}],
        "margin": 0.5,
        "split": "validation" if n == 2 else "train",
    }


def test_it_loads_trl_exports_plain_and_gzipped(tmp_path: Path) -> None:
    lines = "".join(json.dumps(trl_line(n)) + "\n" for n in range(3))
    (tmp_path / "v.jsonl").write_text(lines + "\n", encoding="utf-8")
    with gzip.open(tmp_path / "v.jsonl.gz", "wt", encoding="utf-8") as sink:
        sink.write(lines)
    for name in ("v.jsonl", "v.jsonl.gz"):
        examples = load_examples(tmp_path / name)
        assert [e.chosen for e in examples] == ["yes 0", "yes 1", "yes 2"]
        assert examples[1].prompt == PROMPT
        assert (examples[0].rejected, examples[0].margin, examples[0].weight) == ("no", 0.5, 1.0)
        assert [e.split for e in examples] == ["train", "train", "validation"]


def test_it_loads_fine_exports_with_ratings_and_context(tmp_path: Path) -> None:
    row = {
        "position": 0,
        "item_id": 7,
        "split": "test",
        "prompt": PROMPT,
        "context": "a passage",
        "chosen": "yes",
        "rejected": "no",
        "margin": 1.0,
        "weight": 0.5,
        "provenance": "human_consensus",
        "source": "hh",
        "annotation_ids": [1],
        "labels": {
            "chosen": {"ratings": {"helpful": 4, "note": "x"}, "spans": [], "missing": []},
            "rejected": {"ratings": {}, "spans": [], "missing": []},
        },
    }
    (tmp_path / "fine.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    [example] = load_examples(tmp_path / "fine.jsonl")
    assert example.prompt == [{"role": "system", "content": "a passage"}, *PROMPT]
    assert (example.weight, example.source, example.split) == (0.5, "hh", "test")
    assert example.chosen_ratings == {"helpful": 4.0}
    assert example.rejected_ratings is None


def test_split_by_prompt_never_shares_a_prompt() -> None:
    examples = toy_pairs(60)  # ten distinct prompts
    train, validation = split_by_prompt(examples, validation_fraction=0.2, seed=1)
    assert len(train) + len(validation) == 60
    assert 10 <= len(validation) <= 20
    prompts = {json.dumps(e.prompt) for e in train}
    assert not prompts & {json.dumps(e.prompt) for e in validation}
    again = split_by_prompt(examples, validation_fraction=0.2, seed=1)
    assert again == (train, validation)


def test_length_grouped_batches_cover_every_index_once_in_a_seeded_order() -> None:
    lengths = [(i * 37) % 101 for i in range(500)]
    batches = length_grouped_batches(lengths, batch_size=8, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert all(len(b) <= 8 for b in batches)
    assert batches == length_grouped_batches(lengths, batch_size=8, seed=3)
    assert batches != length_grouped_batches(lengths, batch_size=8, seed=4)
    # Within a batch lengths are close: sorting inside mega-batches of 400 leaves small spreads.
    spreads = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert sum(spreads) / len(spreads) < 10


@pytest.fixture(scope="module")
def bert_tokenizer(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_backbone(tmp_path_factory.mktemp("bert")))


def test_the_collator_puts_chosen_then_rejected_in_one_padded_batch(bert_tokenizer) -> None:  # type: ignore[no-untyped-def]
    examples = toy_pairs(3)
    encoded = encode_pairs(examples, bert_tokenizer, max_length=12, attributes=("helpful", "correct"))
    batch = PairCollator(bert_tokenizer)(encoded)
    assert batch["input_ids"].shape[0] == 6
    assert batch["input_ids"].shape[1] == max(pair.length for pair in encoded)
    first_chosen = bert_tokenizer.decode(batch["input_ids"][0], skip_special_tokens=True)
    first_rejected = bert_tokenizer.decode(batch["input_ids"][3], skip_special_tokens=True)
    assert "good" in first_chosen
    assert "bad" in first_rejected
    # Padding is on the right and masked out.
    assert batch["attention_mask"][:, 0].all()
    # Targets: output 0 the mean rating, then each attribute; unrated attributes masked.
    assert batch["targets"][0].tolist() == [3.5, 4.0, 3.0]
    assert batch["target_mask"][3].tolist() == [1.0, 1.0, 0.0]
    assert batch["margin"].shape == batch["weight"].shape == torch.Size([3])


def test_long_prompts_are_cut_from_the_left(bert_tokenizer) -> None:  # type: ignore[no-untyped-def]
    long = toy_pairs(1)[0]
    long.prompt = [{"role": "user", "content": "why " * 50 + "python"}]
    [pair] = encode_pairs([long], bert_tokenizer, max_length=16)
    text = bert_tokenizer.decode(pair.chosen["input_ids"])
    assert len(pair.chosen["input_ids"]) == 16
    assert "python" in text
    assert "good" in text


def test_a_chat_model_gets_its_template_cut_from_the_left(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_backbone(tmp_path / "gpt2", architecture="gpt2"))
    tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} . {% endfor %}"
    example = toy_pairs(1)[0]
    example.prompt = [{"role": "system", "content": "why " * 40}, {"role": "user", "content": "python ?"}]
    [pair] = encode_pairs([example], tokenizer, max_length=12)
    text = tokenizer.decode(pair.chosen["input_ids"])
    assert len(pair.chosen["input_ids"]) == 12
    assert text.endswith(f"assistant : {example.chosen} .")
