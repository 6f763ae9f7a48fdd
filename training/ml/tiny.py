"""Tiny random backbones and a learnable toy task, for tests and smoke runs without downloads (a few seconds on
a CPU). Not for real training."""

import random
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    BertConfig,
    BertModel,
    GPT2Config,
    GPT2Model,
    LlamaConfig,
    LlamaModel,
    PreTrainedModel,
    PreTrainedTokenizerFast,
)

from training.ml.data import PairExample

WORDS = [
    "the",
    "a",
    "is",
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
    "user",
    "assistant",
    "system",
]
UNK = "[UNK]"
SPECIAL = ["[PAD]", UNK, "[CLS]", "[SEP]", "[MASK]", "</s>"]


def _tokenizer(*, encoder: bool) -> PreTrainedTokenizerFast:
    vocab = {token: i for i, token in enumerate([*SPECIAL, *WORDS, *"0123456789:?.,!"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    if encoder:
        core.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        specials = {"pad_token": "[PAD]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
    else:
        specials = {"eos_token": "</s>", "bos_token": "</s>"}  # no pad token: the loader pads with eos
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token=UNK, model_max_length=128, **specials)


def tiny_backbone(path: Path, *, architecture: str = "bert", hidden_size: int = 32) -> Path:
    """A random 2-layer encoder ("bert") or decoder ("gpt2", "llama") with a word-level tokenizer, saved as
    safetensors. The decoders' tokenizer has no pad token: the loader pads with its end-of-sequence token."""
    tokenizer = _tokenizer(encoder=architecture == "bert")
    backbone = _model(architecture, vocab_size=len(tokenizer), hidden_size=hidden_size, eos=tokenizer.eos_token_id)
    backbone.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def _model(architecture: str, *, vocab_size: int, hidden_size: int, eos: int | None) -> PreTrainedModel:
    if architecture == "bert":
        return BertModel(
            BertConfig(
                vocab_size=vocab_size,
                hidden_size=hidden_size,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=2 * hidden_size,
                max_position_embeddings=128,
            )
        )
    if architecture == "gpt2":
        return GPT2Model(
            GPT2Config(
                vocab_size=vocab_size,
                n_embd=hidden_size,
                n_layer=2,
                n_head=2,
                n_positions=128,
                bos_token_id=eos,
                eos_token_id=eos,
            )
        )
    if architecture == "llama":
        # Rotary positions and grouped-query attention (4 query heads share 2 key/value heads), as Llama 3 and Qwen
        # have. Not qwen2 itself: AutoTokenizer rebuilds a qwen2 checkpoint's tokenizer as byte-level BPE, which
        # loses this word-level vocabulary.
        return LlamaModel(
            LlamaConfig(
                vocab_size=vocab_size,
                hidden_size=hidden_size,
                intermediate_size=2 * hidden_size,
                num_hidden_layers=2,
                num_attention_heads=4,
                num_key_value_heads=2,
                max_position_embeddings=128,
                bos_token_id=eos,
                eos_token_id=eos,
            )
        )
    raise ValueError(f"unknown tiny architecture {architecture!r}")


def toy_pairs(count: int, *, seed: int = 0, source: str = "toy") -> list[PairExample]:
    """Pairs a reward model learns in a few steps: the chosen response says "good", the rejected one "bad"."""
    rng = random.Random(seed)
    examples = []
    for n in range(count):
        filler = " ".join(rng.choice(WORDS[8:20]) for _ in range(rng.randint(1, 6)))
        examples.append(
            PairExample(
                prompt=[{"role": "user", "content": f"question {n % 10} ?"}],
                chosen=f"good {filler}",
                rejected=f"{filler} bad",
                margin=rng.choice([0.0, 1 / 3, 2 / 3, 1.0]),
                source=source,
                chosen_ratings={"helpful": 4.0, "correct": 3.0},
                rejected_ratings={"helpful": 1.0},
            )
        )
    return examples
