"""What a dataset version's rows are made of: which items qualify under a version's filters, and the row each
becomes. Pure reads: curation.services.versions writes the rows.

An item qualifies by its state (annotate.rules.item_state, the rule the dashboard and the review queue apply):

- "agreed": complete, and its annotators agree (no split sides, strengths and ratings within 2).
- "adjudicated": its latest decision is a curator's "label", which overrides the annotators. Provenance
  "adjudicated"; a tie label has no chosen response and gives no row.
- "disputed": complete, but its annotators disagree. Never taken by default: a curator who wants such items
  without adjudicating them says so with this state, and the consensus rule then decides their label.

Excluded, ambiguous, unlabelled and in-progress items never qualify.

An agreed or disputed item's preference comes from the version's consensus rule (curation.aggregation): the
plain mean strength, the mean weighted by each annotator's weight (the annotators page), or the Dawid-Skene
posterior fitted over all the project's labels. The rule's confidence is the row's weight, so a trainer may
down-weight contested pairs; a rule that finds no preference (a tie), or a side no annotator took, gives no row.
Provenance "imported" when every annotation came with an import, else "human_consensus".

Agreement is the share of the item's strengths on the chosen side; the minimum agreement applies to consensus rows
only (a curator's label stands on its own). The margin is the mean of the strengths each divided by the top of its
scale, measured towards the chosen side, never below 0.
"""

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db.models import F, Prefetch, Q

from annotate.models import Annotation, Item, Membership, Project
from annotate.rules import ItemState, item_state, label_summary, sign
from annotate.selectors import SCALE_MAX, annotation_scale, label_schema_current, schema_scales
from concord.errors import FieldError
from curation.aggregation import (
    CONSENSUS_RULES,
    NO_CONSENSUS,
    Consensus,
    mean_consensus,
    posterior_consensus,
    weighted_consensus,
)
from curation.models import Adjudication, DatasetRow
from curation.selectors_quality import sign_posteriors

STATES = (ItemState.AGREED.value, ItemState.ADJUDICATED.value, ItemState.DISPUTED.value)
DEFAULT_STATES = (ItemState.AGREED.value, ItemState.ADJUDICATED.value)
SPLITS = ("train", "validation", "test")
ITEM_CHUNK = 1000


@dataclass(frozen=True)
class VersionFilters:
    """A version's filters, as stored in DatasetVersion.filters (to_json) and read back (from_json)."""

    states: tuple[str, ...] = DEFAULT_STATES
    consensus: str = "mean"
    min_agreement: float = 0.0
    provenance: tuple[str, ...] = tuple(DatasetRow.Provenance.values)
    sources: tuple[str, ...] = ()  # empty: every source
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    seed: int = 0

    def errors(self) -> list[FieldError]:
        errors = [FieldError("states", f"unknown state {s!r}") for s in self.states if s not in STATES]
        unknown = [p for p in self.provenance if p not in DatasetRow.Provenance.values]
        errors += [FieldError("provenance", f"unknown provenance {p!r}") for p in unknown]
        if self.consensus not in CONSENSUS_RULES:
            errors.append(FieldError("consensus", f"must be one of {', '.join(CONSENSUS_RULES)}"))
        if not 0 <= self.min_agreement <= 1:
            errors.append(FieldError("min_agreement", "must be between 0 and 1"))
        if set(self.splits) != set(SPLITS) or any(v < 0 for v in self.splits.values()):
            errors.append(FieldError("splits", "fractions must be given for train, validation and test, none negative"))
        elif abs(sum(self.splits.values()) - 1) > 1e-6:
            errors.append(FieldError("splits", "fractions must add up to 1"))
        return errors

    def to_json(self) -> dict[str, Any]:
        return {
            "states": list(self.states),
            "consensus": self.consensus,
            "min_agreement": self.min_agreement,
            "provenance": list(self.provenance),
            "sources": list(self.sources),
            "splits": dict(self.splits),
            "seed": self.seed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "VersionFilters":
        default = cls()
        return cls(
            states=tuple(data.get("states", default.states)),
            consensus=str(data.get("consensus", default.consensus)),
            min_agreement=float(data.get("min_agreement", default.min_agreement)),
            provenance=tuple(data.get("provenance", default.provenance)),
            sources=tuple(data.get("sources", default.sources)),
            splits={k: float(v) for k, v in data.get("splits", default.splits).items()},
            seed=int(data.get("seed", default.seed)),
        )


def prompt_hash(prompt: Any) -> str:
    """The hash that groups rows by prompt: canonical JSON of the prompt turns."""
    return hashlib.sha256(canonical_json(prompt).encode()).hexdigest()


def split_for(prompt_digest: str, *, seed: int, fractions: dict[str, float]) -> str:
    """The split of every row with this prompt: hash(seed, prompt hash) is a point in [0, 1), and the fractions
    cut [0, 1) into train, validation and test. Same seed and prompt, same split, whatever else is in the
    version, so a prompt never spans splits."""
    digest = hashlib.sha256(f"{seed}:{prompt_digest}".encode()).digest()
    point = struct.unpack(">Q", digest[:8])[0] / 2**64
    edge = 0.0
    for split in SPLITS[:-1]:
        edge += fractions[split]
        if point < edge:
            return split
    return SPLITS[-1]


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class PlannedRow:
    """A row about to be written: its DatasetRow fields (split included, position not yet), and what the version's
    manifest and stats count of it."""

    fields: dict[str, Any]
    state: str
    agreement: float
    schema_ids: set[int]


@dataclass
class Candidate:
    """A qualifying item, before it has a position and a split."""

    item: Item
    state: str
    provenance: str
    a_wins: bool
    margin: float
    agreement: float
    weight: float
    ratings: dict[str, Any]
    schema_ids: set[int]

    def planned(self, *, split: str) -> PlannedRow:
        return PlannedRow(self.row_fields(split=split), self.state, self.agreement, self.schema_ids)

    def row_fields(self, *, split: str) -> dict[str, Any]:
        item = self.item
        chosen, rejected = ("a", "b") if self.a_wins else ("b", "a")
        annotations = list(item.annotations.all())
        return {
            "item_id": item.pk,
            "split": split,
            "prompt": item.prompt,
            "context": item.context,
            "chosen": item.response_a if self.a_wins else item.response_b,
            "rejected": item.response_b if self.a_wins else item.response_a,
            "margin": self.margin,
            "weight": self.weight,
            "provenance": self.provenance,
            "source": item.source,
            "annotation_ids": sorted(a.pk for a in annotations),
            "labels": {
                "chosen": _side_labels(annotations, chosen, self.ratings.get(chosen)),
                "rejected": _side_labels(annotations, rejected, self.ratings.get(rejected)),
            },
        }


def _side_labels(annotations: list[Annotation], side: str, ratings: dict[str, Any] | None) -> dict[str, Any]:
    """One response's labels: the mean of each rating (or the adjudicated ratings), and every annotator's spans
    and missing-information entries on it, each with the annotation it came from."""
    if ratings is None:
        values: dict[str, list[float]] = {}
        for annotation in annotations:
            for name, value in (annotation.ratings or {}).get(side, {}).items():
                if isinstance(value, int | float):
                    values.setdefault(name, []).append(value)
        ratings = {name: round(sum(v) / len(v), 4) for name, v in sorted(values.items())}
    return {
        "ratings": ratings,
        "spans": [{**s, "annotation_id": a.pk} for a in annotations for s in a.spans if s.get("response") == side],
        "missing": [{**m, "annotation_id": a.pk} for a in annotations for m in a.missing if m.get("response") == side],
    }


@dataclass(frozen=True)
class _ProjectContext:
    """What deciding a project's items needs besides the items: its scales, annotator weights and, under the
    Dawid-Skene rule, each item's posterior."""

    project: Project
    rule: str
    scales: dict[int, str]
    current_max: int
    weights: dict[int, float]
    posteriors: dict[int, tuple[float, float, float]]


def _context(project: Project, rule: str) -> _ProjectContext:
    definition = label_schema_current(project=project).definition
    return _ProjectContext(
        project=project,
        rule=rule,
        scales=schema_scales(project=project),
        current_max=SCALE_MAX.get(definition.get("preference", {}).get("scale", "seven"), 3),
        weights=dict(Membership.objects.filter(project=project).values_list("user_id", "weight")),
        posteriors=sign_posteriors(project=project) if rule == "dawid_skene" else {},
    )


def candidates(*, project: Project, filters: VersionFilters, chunk_size: int = ITEM_CHUNK) -> Iterator[Candidate]:
    """The project's items that qualify under `filters`, in id order, streamed a chunk at a time."""
    context = _context(project, filters.consensus)
    chunk: list[Item] = []
    for item in _candidate_items(project, filters).iterator(chunk_size=chunk_size):
        chunk.append(item)
        if len(chunk) >= chunk_size:
            yield from _chunk_candidates(chunk, filters, context)
            chunk = []
    yield from _chunk_candidates(chunk, filters, context)


def _candidate_items(project: Project, filters: VersionFilters) -> Any:
    """A superset of the items that may qualify (complete, imported-only, or decided), with their annotations;
    annotate.rules decides on each from its annotations themselves."""
    decided = Adjudication.objects.filter(item__project=project).values("item_id")
    annotations = (
        Annotation.objects.select_related("annotator")
        .only(
            "id",
            "item_id",
            "annotator_id",
            "strength",
            "origin",
            "schema_id",
            "ratings",
            "spans",
            "missing",
            "annotator__username",
        )
        .order_by("id")
    )
    items = (
        Item.objects.filter(project=project)
        .filter(
            Q(annotation_count__gte=F("extra_overlap") + project.overlap)
            | Q(annotation_count__gt=0, human_count=0)
            | Q(pk__in=decided)
        )
        .prefetch_related(Prefetch("annotations", queryset=annotations))
        .order_by("id")
    )
    return items.filter(source__in=filters.sources) if filters.sources else items


def _chunk_candidates(chunk: list[Item], filters: VersionFilters, context: _ProjectContext) -> Iterator[Candidate]:
    if not chunk:
        return
    latest = {
        adjudication.item_id: adjudication
        for adjudication in Adjudication.objects.filter(item_id__in=[item.pk for item in chunk])
        .order_by("item_id", "-created_at", "-id")
        .distinct("item_id")
    }
    for item in chunk:
        candidate = _candidate(item, latest.get(item.pk), filters, context)
        if candidate is not None and _passes(candidate, filters):
            yield candidate


def _passes(candidate: Candidate, filters: VersionFilters) -> bool:
    if candidate.state not in filters.states or candidate.provenance not in filters.provenance:
        return False
    return candidate.state == ItemState.ADJUDICATED or candidate.agreement >= filters.min_agreement - 1e-9


def _candidate(
    item: Item, adjudication: Adjudication | None, filters: VersionFilters, context: _ProjectContext
) -> Candidate | None:
    everything = list(item.annotations.all())
    summary = label_summary(
        [(a.origin, a.strength, a.ratings) for a in everything], wanted=context.project.overlap + item.extra_overlap
    )
    state = item_state(summary, adjudication.decision if adjudication is not None else None)
    if state not in filters.states:
        return None
    schema_ids = {a.schema_id for a in everything if a.schema_id is not None}
    rated = [a for a in everything if a.strength is not None]
    if state == ItemState.ADJUDICATED:
        assert adjudication is not None
        return _adjudicated(item, adjudication, rated, context, schema_ids)
    consensus = _consensus(item, rated, context)
    agreement = _agreement(rated, consensus.side)
    if consensus.side == 0 or agreement == 0:
        # A tie or nothing to go on: no chosen response. Nor a side no annotator took (Dawid-Skene may infer one).
        return None
    return Candidate(
        item=item,
        state=state,
        provenance=DatasetRow.Provenance.IMPORTED if summary.imported_only else DatasetRow.Provenance.CONSENSUS,
        a_wins=consensus.side < 0,
        margin=_margin(item, rated, consensus.side, context),
        agreement=agreement,
        weight=round(consensus.confidence, 4),
        ratings={},
        schema_ids=schema_ids,
    )


def _adjudicated(
    item: Item, adjudication: Adjudication, rated: list[Annotation], context: _ProjectContext, schema_ids: set[int]
) -> Candidate | None:
    side = sign(adjudication.strength or 0)
    if side == 0:
        return None  # a tie: no chosen response
    return Candidate(
        item=item,
        state=ItemState.ADJUDICATED,
        provenance=DatasetRow.Provenance.ADJUDICATED,
        a_wins=side < 0,
        margin=round(min(1.0, abs(adjudication.strength or 0) / context.current_max), 4),
        agreement=_agreement(rated, side),
        weight=1.0,  # the curator's decision counts fully
        ratings=adjudication.ratings or {},
        schema_ids=schema_ids,
    )


def _consensus(item: Item, rated: list[Annotation], context: _ProjectContext) -> Consensus:
    strengths = [float(a.strength or 0) for a in rated]
    if context.rule == "weighted":
        # Imported annotators are not members: their labels count fully.
        return weighted_consensus(strengths, [context.weights.get(a.annotator_id, 1.0) for a in rated])
    if context.rule == "dawid_skene":
        posterior = context.posteriors.get(item.pk)
        return posterior_consensus(posterior) if posterior is not None else NO_CONSENSUS
    return mean_consensus(strengths)


def _margin(item: Item, rated: list[Annotation], side: int, context: _ProjectContext) -> float:
    """The mean strength towards the chosen side, each divided by the top of its scale, never below 0."""
    normalised = [
        (a.strength or 0) / SCALE_MAX.get(annotation_scale(a, item, context.scales) or "seven", 3) for a in rated
    ]
    return round(max(0.0, side * sum(normalised) / len(normalised)), 4) if normalised else 0.0


def _agreement(annotations: list[Annotation], side: int) -> float:
    if not annotations:
        return 1.0
    return round(sum(sign(a.strength or 0) == side for a in annotations) / len(annotations), 4)
