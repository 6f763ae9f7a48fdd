"""Loading and saving reward models: a transformers sequence-classification model with one output per target.

Output 0 is the preference reward; regression and combined models add outputs 1..n, one per rated attribute, in
the order of TrainConfig.attributes (saved beside the weights in concord_reward.json). An ensemble is K
separately seeded models saved as member-0 .. member-(K-1) under one directory; a single model is a directory of
its own. Only safetensors are read or written: a pickle checkpoint can run arbitrary code when it is loaded. Nor is
a checkpoint's own code run: one whose config names it (`auto_map`) is refused, and transformers is told not to
trust remote code, so only the architectures it ships are built.
"""

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from training.ml.attention import CPU_ATTENTION
from training.ml.config import ATTRIBUTE_OBJECTIVES

logger = logging.getLogger(__name__)

METADATA_FILE = "concord_reward.json"
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# Files in which a checkpoint can name Python code of its own for transformers to import (`auto_map`).
CODE_MAP_FILES = ("config.json", "tokenizer_config.json")


class UnsafeCheckpointError(ValueError):
    """A checkpoint that could run code when loaded: weights only as pickle files (pytorch_model.bin, *.pt), or a
    config that names code of its own (auto_map)."""


def check_checkpoint(path: Path) -> None:
    """Raise unless `path` is a directory of safetensors weights that names no code of its own."""
    _check_safetensors(path)
    _check_no_custom_code(path)


def _check_no_custom_code(path: Path) -> None:
    for name in CODE_MAP_FILES:
        try:
            data = json.loads((path / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # absent, or broken: transformers reports a broken file as it reads it
        if isinstance(data, dict) and "auto_map" in data:
            raise UnsafeCheckpointError(
                f"{path / name} names code of its own (auto_map), which would run when the model is loaded; "
                "only architectures that transformers ships are loaded"
            )


def _check_safetensors(path: Path) -> None:
    if not path.is_dir():
        raise FileNotFoundError(f"no model directory at {path}")
    if any(path.glob("*.safetensors")):
        return
    pickles = sorted(p.name for pattern in PICKLE_PATTERNS for p in path.glob(pattern))
    if pickles:
        raise UnsafeCheckpointError(
            f"{path} holds only pickle weights ({', '.join(pickles)}), which can run code when loaded; "
            "convert the checkpoint to safetensors first"
        )
    raise FileNotFoundError(f"no *.safetensors weights in {path}")


def load_reward_model(path: Path | str, *, num_outputs: int = 1) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A sequence-classification model with `num_outputs` outputs and its tokenizer. A backbone without a
    classification head gets a new one (transformers reports it as missing). A decoder without a pad token pads
    with its end-of-sequence token, and the model is told so: it reads the last token that is not padding."""
    path = Path(path)
    check_checkpoint(path)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"the tokenizer in {path} has neither a pad nor an end-of-sequence token")
        tokenizer.pad_token = tokenizer.eos_token
    saved = saved_outputs(path)
    if saved is not None and saved != num_outputs:
        # A Concord model as the backbone of another objective, e.g. Bradley-Terry initialised from an attribute
        # regression (HelpSteer2-Preference): output 0, the preference reward, carries over; the rest is new.
        model = _from_pretrained(path, num_labels=saved)
        resize_head(model, num_outputs)
    else:
        # Any other checkpoint whose head has another number of outputs (a 2-class sentiment classifier, say)
        # gets a new head: its classes mean nothing as rewards.
        model = _from_pretrained(path, num_labels=num_outputs, ignore_mismatched_sizes=True)
    model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def attention_implementation(*, cuda: bool, flash_attention_2: bool) -> str | None:
    """The attention kernel to ask transformers for: FlashAttention 2 on a GPU where it is installed (decoders
    then train packed, without padding: training.ml.packing), else transformers' default (sdpa) on a GPU, and on
    the CPU sdpa computed in fp32 under bf16 autocast (training.ml.attention: 3-4x faster there than bf16)."""
    if not cuda:
        return CPU_ATTENTION
    return "flash_attention_2" if flash_attention_2 else None


def _from_pretrained(path: Path, **kwargs: Any) -> PreTrainedModel:
    """The checkpoint as a sequence classifier, with the kernel attention_implementation asks for where the
    architecture has it (else the default kernel, and a line in the log saying so)."""
    from transformers.utils import is_flash_attn_2_available

    load = {"use_safetensors": True, "trust_remote_code": False, **kwargs}
    attention = attention_implementation(cuda=torch.cuda.is_available(), flash_attention_2=is_flash_attn_2_available())
    if attention is not None:
        try:
            return AutoModelForSequenceClassification.from_pretrained(path, attn_implementation=attention, **load)
        except (ValueError, ImportError) as error:
            logger.info("No %s for %s (%s): the default attention", attention, path, error)
    return AutoModelForSequenceClassification.from_pretrained(path, **load)


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout of the model set to 0 (TRL's disable_dropout_in_model does the first half): the nn.Dropout
    modules, and the float rates some attention classes keep for their kernel (Llama and Qwen2's
    `attention_dropout`, read at each forward pass while training)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        elif isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0  # type: ignore[assignment]


def saved_outputs(path: Path) -> int | None:
    """The number of outputs a model saved by Concord was trained with (concord_reward.json), or None."""
    metadata = model_metadata(path)
    if not metadata:
        return None
    attributes = metadata.get("attributes", []) if metadata.get("objective") in ATTRIBUTE_OBJECTIVES else []
    return 1 + len(attributes)


def reward_head(model: PreTrainedModel) -> torch.nn.Linear:
    """The linear layer whose outputs are the rewards: `score` on decoders, `classifier` (or its `out_proj`) on
    encoders."""
    for name in ("score", "classifier.out_proj", "classifier"):
        module = model.get_submodule(name) if _has_submodule(model, name) else None
        if isinstance(module, torch.nn.Linear) and module.out_features == model.config.num_labels:
            return module
    raise ValueError(f"{type(model).__name__} has no linear reward head named score or classifier")


def _has_submodule(model: PreTrainedModel, name: str) -> bool:
    try:
        model.get_submodule(name)
    except AttributeError:
        return False
    return True


@torch.no_grad()
def resize_head(model: PreTrainedModel, num_outputs: int) -> None:
    """Give the reward head `num_outputs` outputs, keeping the trained rows it has (output 0 first) and
    initialising new ones as transformers initialises a new head."""
    old = reward_head(model)
    new = torch.nn.Linear(old.in_features, num_outputs, bias=old.bias is not None, device=old.weight.device)
    model._init_weights(new)
    keep = min(num_outputs, old.out_features)
    new.weight[:keep] = old.weight[:keep]
    if old.bias is not None and new.bias is not None:
        new.bias[:keep] = old.bias[:keep]
    parent, _, attribute = _head_path(model, old).rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attribute, new)
    model.config.num_labels = num_outputs


def _head_path(model: PreTrainedModel, head: torch.nn.Module) -> str:
    return next(name for name, module in model.named_modules() if module is head)


def save_reward_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    path: Path,
    *,
    metadata: dict[str, Any] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> None:
    """Weights as safetensors (transformers 5 writes nothing else), the tokenizer, and Concord's metadata. A
    sharded model's weights come gathered in `state_dict` (training.ml.distributed.full_model_state)."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path, state_dict=state_dict)
    tokenizer.save_pretrained(path)
    (path / METADATA_FILE).write_text(json.dumps(metadata or {}, indent=2, sort_keys=True), encoding="utf-8")


def model_metadata(path: Path) -> dict[str, Any]:
    file = path / METADATA_FILE
    return json.loads(file.read_text(encoding="utf-8")) if file.exists() else {}


def member_dirs(model_dir: Path | str) -> list[Path]:
    """The models to run: member-0.. of an ensemble in order, or the one model. A training run's output
    directory works as well as its model/ directory."""
    model_dir = Path(model_dir)
    members = sorted(model_dir.glob("member-*"), key=lambda p: int(p.name.split("-", 1)[1]))
    if members:
        return [m for m in members if m.is_dir()]
    if not any(model_dir.glob("*.safetensors")) and (model_dir / "model").is_dir():
        return [model_dir / "model"]
    return [model_dir]


def load_for_inference(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, torch.device]:
    """A saved reward model in eval mode, on the GPU if there is one, with as many outputs as it was trained
    with (its concord_reward.json lists the attributes of outputs 1..n)."""
    model, tokenizer = load_reward_model(path, num_outputs=saved_outputs(path) or 1)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)  # type: ignore[arg-type]  # transformers' stub types .to's argument as a model
    model.eval()
    return model, tokenizer, device


def reward_outputs(model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(sequences, outputs) logits as float32: column 0 the preference reward, 1..n attribute predictions."""
    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    return model(**inputs).logits.float()
