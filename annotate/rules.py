"""What an item's labels add up to: the one home of the rules every page applies. Pure Python: no Django import.

The dashboard's item states, the review queue (which items, why, how severe) and dataset versions (which items
qualify, and as what) all call these functions. Where SQL mirrors a rule for speed (curation.rule_sql), a test
checks that the two agree on every case (tests/curation/test_rules_sql.py).

The facts a rule reads about an item are its LabelSummary: counts and extremes of its annotations' strengths
and the widest spread of its ratings, which annotate.services.label_summary keeps on the Item row.

- A preference's sign: -1 prefers response A, +1 response B, 0 is a tie.
- A sign split: some annotators prefer A while others prefer B. A tie beside one side is not a split.
- A strength spread: the strongest and weakest strengths differ by more than STRENGTH_SPREAD_LIMIT (2):
  HelpSteer2-Preference drops pairs whose annotations span more than 2 points. A rating spread: some attribute of
  one response is rated more than RATING_SPREAD_LIMIT (2) apart (HelpSteer2).
- Disputed: a sign split, a strength spread or a rating spread. Agreed: none of them.
- Item state, from the latest curator decision first:
    excluded     the latest decision is "exclude" or "ambiguous" (no right answer): never in a dataset;
    adjudicated  the latest decision is "label": a curator's final label overrides the annotators;
    unlabelled   no annotation yet;
    in progress  fewer annotations than the item wants (the project's overlap plus any extra a curator asked
                 for). An item whose every annotation came with an import is complete as it is: the data came
                 labelled, and the overlap is about Concord's own annotators; unless a curator asked for more.
                 Once Concord's annotators start on it (it is still handed out), it is in progress until they
                 have given all the annotations it wants: their labels verify the imported ones;
    disputed / agreed  complete, with or without a dispute.
- The review queue: an unresolved item (no final decision, or flagged again since) that is disputed, or whose
  open flag asks for a look, or that the project's reward model confidently contradicts. Severity orders it:
  the disagreement points times n / (n + 1) for n annotations (a split among many annotators counts for more
  than the same split between two), plus FLAG_POINTS for an open flag (a person asked: it ranks high) and
  MODEL_POINTS when the model contradicts the annotators.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

STRENGTH_SPREAD_LIMIT = 2
RATING_SPREAD_LIMIT = 2

# Severity points.
SIGN_SPLIT_POINTS = 2.0  # plus up to EVEN_SPLIT_POINTS more the more even the split is
EVEN_SPLIT_POINTS = 2.0
RATING_SPREAD_POINTS = 1.0
FLAG_POINTS = 3.0
MODEL_POINTS = 2.0

# The values of curation.models.Adjudication.Decision (a test keeps them equal).
LABEL, AMBIGUOUS, EXCLUDE, MORE = "label", "ambiguous", "exclude", "more"
FINAL_DECISIONS = (LABEL, AMBIGUOUS, EXCLUDE)


class ItemState(StrEnum):
    UNLABELLED = "unlabelled"
    IN_PROGRESS = "in progress"
    AGREED = "agreed"
    DISPUTED = "disputed"
    ADJUDICATED = "adjudicated"
    EXCLUDED = "excluded"


def sign(value: float) -> int:
    return (value > 0) - (value < 0)


@dataclass(frozen=True)
class LabelSummary:
    """What an item's annotations say, as the Item row keeps it (annotate.services.label_summary)."""

    annotations: int  # every annotation, with or without a strength (Item.annotation_count)
    wanted: int  # the project's overlap plus the item's extra_overlap
    human: int = 0  # annotations made in Concord; the others came with an import
    strengths: int = 0  # annotations with a strength
    prefer_a: int = 0  # strengths below 0
    prefer_b: int = 0  # strengths above 0
    strength_min: int | None = None
    strength_max: int | None = None
    strength_sum: int = 0
    rating_spread: int = 0  # the widest max - min of one attribute of one response over the annotations

    @property
    def imported_only(self) -> bool:
        return self.annotations > 0 and self.human == 0

    @property
    def consensus_sign(self) -> int:
        """The side of the plain mean strength: -1 A, +1 B, 0 a tie or no strength."""
        return sign(self.strength_sum)


def rating_spread(ratings: Iterable[Any]) -> int:
    """The widest spread (max - min) of one attribute of one response over several annotations' ratings
    ({"a": {"helpfulness": 3}, "b": {...}}); 0 with fewer than two values of any. Values that are not whole
    numbers are left out, as the SQL that keeps Item.rating_spread leaves them."""
    values: dict[tuple[str, str], list[int]] = {}
    for given in ratings:
        for side, attributes in given.items() if isinstance(given, Mapping) else ():
            for name, value in attributes.items() if isinstance(attributes, Mapping) else ():
                if isinstance(value, int) and not isinstance(value, bool):
                    values.setdefault((side, name), []).append(value)
    return max((max(v) - min(v) for v in values.values()), default=0)


def label_summary(annotations: Sequence[tuple[str, int | None, Any]], *, wanted: int) -> LabelSummary:
    """The summary of an item's annotations, each (origin, strength, ratings) with origin "human" or "imported"."""
    strengths = [strength for _, strength, _ in annotations if strength is not None]
    return LabelSummary(
        annotations=len(annotations),
        wanted=wanted,
        human=sum(1 for origin, _, _ in annotations if origin == "human"),
        strengths=len(strengths),
        prefer_a=sum(1 for s in strengths if s < 0),
        prefer_b=sum(1 for s in strengths if s > 0),
        strength_min=min(strengths, default=None),
        strength_max=max(strengths, default=None),
        strength_sum=sum(strengths),
        rating_spread=rating_spread(ratings for _, _, ratings in annotations),
    )


def sign_split(summary: LabelSummary) -> bool:
    return summary.prefer_a > 0 and summary.prefer_b > 0


def strength_spread(summary: LabelSummary) -> int:
    if summary.strength_min is None or summary.strength_max is None:
        return 0
    return summary.strength_max - summary.strength_min


def disputed(summary: LabelSummary) -> bool:
    return (
        sign_split(summary)
        or strength_spread(summary) > STRENGTH_SPREAD_LIMIT
        or summary.rating_spread > RATING_SPREAD_LIMIT
    )


def complete(summary: LabelSummary, decision: str | None) -> bool:
    """Every annotation the item wants is in (or its labels all came with an import and nobody asked for more)."""
    return summary.annotations >= summary.wanted or (summary.imported_only and decision != MORE)


def item_state(summary: LabelSummary, decision: str | None = None) -> ItemState:
    """The item's state given its summary and its latest curator decision (None when it has none)."""
    if decision in (EXCLUDE, AMBIGUOUS):
        return ItemState.EXCLUDED
    if decision == LABEL:
        return ItemState.ADJUDICATED
    if summary.annotations == 0:
        return ItemState.UNLABELLED
    if not complete(summary, decision):
        return ItemState.IN_PROGRESS
    return ItemState.DISPUTED if disputed(summary) else ItemState.AGREED


def model_contradicts(summary: LabelSummary, probability_b: float | None, threshold: float) -> bool:
    """The reward model prefers the other side than the annotators' mean strength with at least `threshold`
    probability (its calibrated probability that B is preferred, training.services.scoring)."""
    side = summary.consensus_sign
    if probability_b is None or side == 0:
        return False
    return probability_b >= threshold if side < 0 else probability_b <= 1 - threshold


# Why an item is in the review queue, by code, as pages name it.
REASON_LABELS = {
    "sign": "Sign split",
    "strength": "Strength spread > 2",
    "rating": "Rating spread > 2",
    "flagged": "Flagged",
    "model": "Model disagrees",
    # A running curation campaign's ensemble, which the queue weighs the annotators against in the active
    # model's place (training.selectors.queue_model).
    "ensemble": "Campaign ensemble disagrees",
}


@dataclass(frozen=True)
class Reason:
    code: str
    points: float
    detail: str

    @property
    def label(self) -> str:
        return REASON_LABELS[self.code]


def reasons(
    summary: LabelSummary,
    *,
    open_flag: bool = False,
    model_contradicts: bool = False,
    rating_detail: str = "",
    model_detail: str = "",
    model_reason: str = "model",
) -> list[Reason]:
    """Why an item needs a curator, each reason with its points (before the n / (n + 1) factor)."""
    found = []
    if sign_split(summary):
        even = min(summary.prefer_a, summary.prefer_b) / max(summary.prefer_a, summary.prefer_b)
        detail = f"{summary.prefer_a} prefer A, {summary.prefer_b} prefer B"
        found.append(Reason("sign", SIGN_SPLIT_POINTS + EVEN_SPLIT_POINTS * even, detail))
    spread = strength_spread(summary)
    if spread > STRENGTH_SPREAD_LIMIT:
        detail = f"from {summary.strength_min:+d} to {summary.strength_max:+d}"
        found.append(Reason("strength", float(spread - STRENGTH_SPREAD_LIMIT), detail))
    if summary.rating_spread > RATING_SPREAD_LIMIT:
        found.append(Reason("rating", RATING_SPREAD_POINTS, rating_detail or f"spread {summary.rating_spread}"))
    if open_flag:
        found.append(Reason("flagged", FLAG_POINTS, "open flag"))
    if model_contradicts:
        found.append(Reason(model_reason, MODEL_POINTS, model_detail))
    return found


# Reasons whose points grow with the number of annotators behind them.
DISAGREEMENT_REASONS = ("sign", "strength", "rating")


def severity(summary: LabelSummary, found: Sequence[Reason]) -> float:
    n = summary.annotations
    disagreement = sum(r.points for r in found if r.code in DISAGREEMENT_REASONS)
    others = sum(r.points for r in found if r.code not in DISAGREEMENT_REASONS)
    return disagreement * n / (n + 1) + others


def in_review_queue(
    summary: LabelSummary, decision: str | None, *, open_flag: bool, model_contradicts: bool = False
) -> bool:
    """An open flag always asks for a look (a decision resolves the flags raised before it); otherwise an item in
    progress or resolved by a decision stays out, and a complete one comes in when disputed or contradicted."""
    if open_flag:
        return True
    state = item_state(summary, decision)
    return state == ItemState.DISPUTED or (state == ItemState.AGREED and model_contradicts)


class Pool(StrEnum):
    """Where an item stands for human-AI curation (training.services.campaigns):

    gold        human-verified: a gold item, a curator's final label, or Concord's annotators agreeing;
    with humans Concord's annotators are on it (in progress) or disagree (disputed): no model decides it;
    silver      labelled by anything else: labels that came with an import (the annotations' mean side, else the
                source's own chosen/rejected) or an AI label, never verified by a person;
    unlabelled  no label (or a tie) to go on;
    excluded    a curator excluded it, or found no right answer.
    """

    GOLD = "gold"
    WITH_HUMANS = "with humans"
    SILVER = "silver"
    UNLABELLED = "unlabelled"
    EXCLUDED = "excluded"


def silver_sign(summary: LabelSummary, source_label: int | None) -> int:
    """The side an unverified label prefers: the imported annotations' mean side, else the source's label."""
    if summary.strengths > 0:
        return summary.consensus_sign
    return sign(source_label or 0)


def pool(summary: LabelSummary, decision: str | None, *, is_gold: bool, source_label: int | None) -> Pool:
    """The item's pool (Pool's doc) from its summary, latest curator decision, gold flag and source label."""
    state = item_state(summary, decision)
    if state == ItemState.EXCLUDED:
        return Pool.EXCLUDED
    if is_gold or state == ItemState.ADJUDICATED or (state == ItemState.AGREED and summary.human > 0):
        return Pool.GOLD
    if summary.human > 0:
        return Pool.WITH_HUMANS
    return Pool.SILVER if silver_sign(summary, source_label) != 0 else Pool.UNLABELLED
