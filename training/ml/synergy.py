"""Human-AI synergy curation: the one home of a campaign's settings and of the rules that turn an ensemble's
scores into decisions about labels. Pure numpy (no Django, no torch), so the campaign's worker and
bench/synergy.py apply the very same rules.

Conventions. A pair's label is a sign: +1 when B is preferred, -1 when A is (a strength's sign). An ensemble
member's margin is r_B - r_A. Towards a label s, a member's strength is s * margin; the ensemble's strength is its
members' mean (Secrets of RLHF II's preference strength) and its spread their standard deviation; p_agree is the
calibrated probability that the label is right, sigmoid(mean strength / T).

Decisions follow Skywork-Reward-V2's rule: a pair is kept when the gold reward model (here the ensemble trained on
every human-verified pair) agrees AND either another voter (an LLM judge, say) or the current model agrees. Every
voter is a Vote of p_agree per pair; with the ensemble as the only voter the second clause is the ensemble again.
Contradictions mirror it. Whatever no rule is sure of is uncertain, and may be routed to humans.
"""

import dataclasses
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from training.ml.config import ENSEMBLE_KINDS  # the trainer's: a campaign trains its ensembles with it

CONTRADICTION_ACTIONS = ("flip", "drop")
UNCERTAIN_ACTIONS = ("keep", "leave_out")


class Decision(StrEnum):
    """What a round decided about one pair. Silver pairs: accept, flip, drop or uncertain; unlabelled pairs:
    ai_label (the ensemble is confident) or unlabelled."""

    ACCEPT = "accept"
    FLIP = "flip"
    DROP = "drop"
    UNCERTAIN = "uncertain"
    AI_LABEL = "ai_label"
    UNLABELLED = "unlabelled"


# Decisions that put a row into the round's version; the others leave the pair out.
KEEPING = (Decision.ACCEPT, Decision.FLIP, Decision.AI_LABEL)


@dataclass
class CampaignSettings:
    """A campaign's configuration, as its form shows it and as Campaign.settings stores it (to_dict)."""

    ensemble_size: int = field(default=3, metadata={"help": "Reward models trained per round (2 or more)."})
    ensemble_kind: str = field(
        default="seeds",
        metadata={
            "help": "seeds: every member sees all the data in its own order and initialisation (Secrets of RLHF "
            "II); bootstrap: every member trains on its own resample of the pairs."
        },
    )
    epochs: int = field(default=1, metadata={"help": "Passes over the training pairs, per member."})
    max_length: int = field(default=256, metadata={"help": "Tokens per prompt+response."})
    batch_size: int = field(default=16, metadata={"help": "Pairs per step."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Peak AdamW learning rate."})
    backbone: str = field(
        default="",
        metadata={
            "help": "A model directory under the server's model roots (CONCORD_MODEL_ROOTS) or of a model trained in a "
            "project you administer; empty: the packaged default backbone."
        },
    )
    accept_threshold: float = field(
        default=0.7, metadata={"help": "A silver label is accepted when the ensemble's p_agree is at least this."}
    )
    contradict_threshold: float = field(
        default=0.7,
        metadata={"help": "A silver label is contradicted when the ensemble's p against it is at least this."},
    )
    max_spread: float = field(
        default=0.0,
        metadata={"help": "Pairs whose members' margins spread (std) more than this are uncertain; 0: no limit."},
    )
    contradiction_action: str = field(
        default="flip",
        metadata={"help": "flip: a confident contradiction swaps chosen and rejected; drop: it leaves the data."},
    )
    ai_label_threshold: float = field(
        default=0.8,
        metadata={"help": "An unlabelled pair gets the ensemble's label when it prefers a side at least this surely."},
    )
    uncertain_action: str = field(
        default="keep",
        metadata={
            "help": "Uncertain silver pairs the humans do not get: keep (their label, weighted by the ensemble's "
            "belief in it, as Secrets of RLHF II smooths the uncertain band) or leave_out (as Skywork keeps only "
            "confident agreements)."
        },
    )
    budget_per_round: int = field(default=100, metadata={"help": "Pairs routed to humans per round."})
    total_budget: int = field(default=0, metadata={"help": "Pairs routed to humans in all; 0: no limit."})
    retrieval_k: int = field(
        default=8, metadata={"help": "Neighbours a gold pair the ensemble gets wrong pulls to the humans."}
    )
    retrieval_share: float = field(
        default=0.5,
        metadata={"help": "Share of a round's budget for neighbours of gold errors; the rest: the most uncertain."},
    )
    max_rounds: int = field(default=3, metadata={"help": "Rounds before the campaign stops."})
    min_gold_gain: float = field(
        default=0.0,
        metadata={"help": "Stop when held-out gold accuracy rises by less than this from one round to the next."},
    )
    gold_holdout: float = field(
        default=0.2, metadata={"help": "Share of gold prompts held out to choose checkpoints and measure each round."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of splits, members and routing ties."})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CampaignSettings":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown campaign settings: {', '.join(unknown)}")
        return cls(**data)

    def problems(self) -> list[tuple[str, str]]:
        """Every (field, problem); empty when the settings are in range."""
        checks = [
            ("ensemble_size", "" if self.ensemble_size >= 2 else "an ensemble needs at least 2 members"),
            (
                "ensemble_kind",
                "" if self.ensemble_kind in ENSEMBLE_KINDS else f"must be one of {', '.join(ENSEMBLE_KINDS)}",
            ),
            ("epochs", "" if self.epochs >= 1 else "must be at least 1"),
            ("max_length", "" if 8 <= self.max_length <= 8192 else "must be between 8 and 8192"),
            ("batch_size", "" if self.batch_size >= 1 else "must be at least 1"),
            ("learning_rate", "" if 0 < self.learning_rate < 1 else "must be between 0 and 1"),
            ("accept_threshold", _probability_problem(self.accept_threshold)),
            ("contradict_threshold", _probability_problem(self.contradict_threshold)),
            ("ai_label_threshold", _probability_problem(self.ai_label_threshold)),
            ("max_spread", "" if self.max_spread >= 0 else "must not be negative"),
            (
                "contradiction_action",
                "" if self.contradiction_action in CONTRADICTION_ACTIONS else "must be flip or drop",
            ),
            ("budget_per_round", "" if self.budget_per_round >= 0 else "must not be negative"),
            ("total_budget", "" if self.total_budget >= 0 else "must not be negative"),
            ("retrieval_k", "" if 0 <= self.retrieval_k <= 64 else "must be between 0 and 64"),
            ("retrieval_share", "" if 0 <= self.retrieval_share <= 1 else "must be between 0 and 1"),
            ("uncertain_action", "" if self.uncertain_action in UNCERTAIN_ACTIONS else "must be keep or leave_out"),
            ("max_rounds", "" if 1 <= self.max_rounds <= 100 else "must be between 1 and 100"),
            ("min_gold_gain", "" if 0 <= self.min_gold_gain < 1 else "must be in [0, 1)"),
            ("gold_holdout", "" if 0.05 <= self.gold_holdout <= 0.5 else "must be between 0.05 and 0.5"),
            ("seed", "" if 0 <= self.seed < 2**31 else "must be between 0 and 2147483647"),
        ]
        return [(name, problem) for name, problem in checks if problem]


def _probability_problem(value: float) -> str:
    return "" if 0.5 < value < 1 else "must be above 0.5 and below 1"


@dataclass(frozen=True)
class Vote:
    """One voter's probability, per pair, that the pair's label is right (NaN: it did not vote on that pair)."""

    name: str
    p_agree: np.ndarray


def strengths(margins: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and spread (population std) of the members' strengths towards each label: margins is
    (members, pairs) of r_B - r_A, labels the pairs' signs."""
    towards = margins * labels[np.newaxis, :]
    return towards.mean(axis=0), towards.std(axis=0)


def probability(strength: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """sigmoid(strength / T), computed without overflow."""
    return 0.5 * (1.0 + np.tanh(np.asarray(strength, dtype=np.float64) / (2.0 * temperature)))


def decide_silver(
    gold: Vote,
    spread: np.ndarray,
    settings: CampaignSettings,
    *,
    seconds: tuple[Vote, ...] = (),
) -> np.ndarray:
    """Each silver pair's decision (an array of Decision values) under Skywork's rule (module doc): `gold` is the
    model trained on every human-verified pair, `seconds` the voters of the rule's second clause (LLM judges, the
    current model); without any, the gold vote decides alone. `spread` is the gold ensemble's."""
    gold_agrees = gold.p_agree >= settings.accept_threshold
    gold_contradicts = (1.0 - gold.p_agree) >= settings.contradict_threshold
    if settings.max_spread > 0:
        settled = spread <= settings.max_spread
        gold_agrees, gold_contradicts = gold_agrees & settled, gold_contradicts & settled
    if seconds:
        gold_agrees &= np.stack([v.p_agree >= settings.accept_threshold for v in seconds]).any(axis=0)
        gold_contradicts &= np.stack([(1.0 - v.p_agree) >= settings.contradict_threshold for v in seconds]).any(axis=0)
    contradiction = Decision.FLIP if settings.contradiction_action == "flip" else Decision.DROP
    decisions = np.full(gold.p_agree.shape, Decision.UNCERTAIN.value, dtype=object)
    decisions[gold_agrees] = Decision.ACCEPT.value
    decisions[gold_contradicts] = contradiction.value
    return decisions


def decide_unlabelled(p_b: np.ndarray, spread: np.ndarray, settings: CampaignSettings) -> tuple[np.ndarray, np.ndarray]:
    """(decisions, AI label signs) of unlabelled pairs from the ensemble's probability that B is preferred: a
    label only where one side is preferred at least ai_label_threshold surely (and the spread is within the
    limit); sign 0 elsewhere."""
    confident = np.maximum(p_b, 1.0 - p_b) >= settings.ai_label_threshold
    if settings.max_spread > 0:
        confident &= spread <= settings.max_spread
    signs = np.where(confident, np.where(p_b >= 0.5, 1, -1), 0)
    decisions = np.where(confident, Decision.AI_LABEL.value, Decision.UNLABELLED.value).astype(object)
    return decisions, signs


def retrieval_k(p_correct: float, k: int = 8) -> int:
    """How many nearest undecided pairs a gold pair pulls to the humans (Skywork-Reward-V2's error-driven
    retrieval): k when the ensemble gets it wrong (p <= 0.5), else ceil(k (1 - p)), fewer the surer it is right."""
    if k <= 0:
        return 0
    if p_correct <= 0.5:
        return k
    return min(k, math.ceil(k * (1.0 - p_correct)))


def uncertainty(p: np.ndarray) -> np.ndarray:
    """How undecided a probability is: 1 at 0.5, 0 at 0 or 1; routing takes the most uncertain first."""
    return 1.0 - np.abs(2.0 * np.asarray(p, dtype=np.float64) - 1.0)


def retrieval_budget(budget: int, settings: CampaignSettings) -> int:
    """Of a round's budget, the pairs for neighbours of gold errors (the rest go to the most uncertain pairs, and
    to these too when retrieval finds fewer)."""
    return int(budget * settings.retrieval_share) if settings.retrieval_k > 0 else 0


def kept_label(decision: str, label_sign: int, p_agree: float, settings: CampaignSettings) -> tuple[int, float] | None:
    """What row a decided pair gives: the side it prefers (+1 B, -1 A) and the confidence its weight and margin
    come from (ai_margin); None when it gives none. For an unlabelled pair p_agree is the probability that B is
    preferred."""
    if decision == Decision.ACCEPT:
        return label_sign, p_agree
    if decision == Decision.FLIP:
        return -label_sign, 1.0 - p_agree
    if decision == Decision.AI_LABEL:
        return (1, p_agree) if p_agree >= 0.5 else (-1, 1.0 - p_agree)
    if decision == Decision.UNCERTAIN and settings.uncertain_action == "keep":
        return label_sign, p_agree
    return None


def round_budget(settings: CampaignSettings, *, spent: int) -> int:
    """Pairs this round may route: the per-round budget, within what is left of the total."""
    if settings.total_budget <= 0:
        return settings.budget_per_round
    return max(0, min(settings.budget_per_round, settings.total_budget - spent))


def stop_reason(settings: CampaignSettings, *, rounds_done: int, spent: int, gold_accuracy: list[float | None]) -> str:
    """Why the campaign stops after its latest round; empty while it goes on."""
    if rounds_done >= settings.max_rounds:
        return f"{rounds_done} of {settings.max_rounds} rounds done"
    if settings.total_budget > 0 and spent >= settings.total_budget:
        return f"the human budget of {settings.total_budget} pairs is spent"
    measured = [a for a in gold_accuracy if a is not None]
    if settings.min_gold_gain > 0 and len(measured) >= 2 and measured[-1] - measured[-2] < settings.min_gold_gain:
        return (
            f"held-out gold accuracy rose {measured[-1] - measured[-2]:+.3f} in the last round, "
            f"less than {settings.min_gold_gain:.3f}"
        )
    return ""


def ai_margin(p_agree: np.ndarray) -> np.ndarray:
    """The margin of a model-decided row on the scale of human rows' margins ([0, 1]): 2 p - 1 towards its
    chosen side, so a sure model gives a wide margin and a hesitant one almost none."""
    return np.clip(2.0 * np.asarray(p_agree, dtype=np.float64) - 1.0, 0.0, 1.0)
