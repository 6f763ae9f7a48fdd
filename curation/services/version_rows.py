"""What a dataset version's rows are made of: which items qualify under a version's filters, and the row each
becomes. Pure reads: curation.services.versions writes the rows.

An item qualifies in one of two states:

- "agreed": complete (annotation_count >= overlap + extra_overlap) with a mean strength that is not a tie. An
  item whose every annotation came with an import counts as agreed however many it has: the data came labelled,
  and the overlap is about Concord's own annotators. Its provenance is "imported", else "human_consensus".
- "adjudicated": its latest Adjudication is a "label" decision with a non-tie strength, which overrides the
  annotators' consensus. Provenance "adjudicated".

An item whose latest decision is "exclude" or "ambiguous" never qualifies, whatever its annotations say.

Agreement is the share of the item's annotations with a strength whose sign is that of the row's preference.
The minimum agreement applies to agreed items only: a curator adjudicates precisely the items annotators
disagreed on. The weight of a row is its agreement share for an agreed item, 1.0 for an adjudicated one (the
curator's decision counts fully), so a trainer may down-weight contested pairs.
"""

import hashlib
import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Exists, F, OuterRef, Prefetch, Q

from annotate.models import Annotation, Item, Project
from annotate.selectors import SCALE_MAX, annotation_scale, label_schema_current, schema_scales
from curation.models import Adjudication, DatasetRow

STATES = ("agreed", "adjudicated")
SPLITS = ("train", "validation", "test")
ITEM_CHUNK = 1000


@dataclass(frozen=True)
class VersionFilters:
    """A version's filters, as stored in DatasetVersion.filters (to_json) and read back (from_json)."""

    states: tuple[str, ...] = STATES
    min_agreement: float = 0.0
    provenance: tuple[str, ...] = tuple(DatasetRow.Provenance.values)
    sources: tuple[str, ...] = ()  # empty: every source
    splits: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "validation": 0.1, "test": 0.1})
    seed: int = 0

    def errors(self) -> list[str]:
        errors = [f"unknown state {s!r}" for s in self.states if s not in STATES]
        errors += [f"unknown provenance {p!r}" for p in self.provenance if p not in DatasetRow.Provenance.values]
        if not 0 <= self.min_agreement <= 1:
            errors.append("minimum agreement must be between 0 and 1")
        if set(self.splits) != set(SPLITS) or any(v < 0 for v in self.splits.values()):
            errors.append("split fractions must be given for train, validation and test, none negative")
        elif abs(sum(self.splits.values()) - 1) > 1e-6:
            errors.append("split fractions must add up to 1")
        return errors

    def to_json(self) -> dict[str, Any]:
        return {
            "states": list(self.states),
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
class _ProjectScales:
    by_schema: dict[int, str]
    current_max: int


def candidates(*, project: Project, filters: VersionFilters, chunk_size: int = ITEM_CHUNK) -> Iterator[Candidate]:
    """The project's items that qualify under `filters`, in id order, streamed a chunk at a time."""
    definition = label_schema_current(project=project).definition
    scales = _ProjectScales(
        by_schema=schema_scales(project=project),
        current_max=SCALE_MAX.get(definition.get("preference", {}).get("scale", "seven"), 3),
    )
    chunk: list[Item] = []
    for item in _candidate_items(project, filters).iterator(chunk_size=chunk_size):
        chunk.append(item)
        if len(chunk) >= chunk_size:
            yield from _chunk_candidates(chunk, project, filters, scales)
            chunk = []
    yield from _chunk_candidates(chunk, project, filters, scales)


def _candidate_items(project: Project, filters: VersionFilters) -> Any:
    adjudicated = Adjudication.objects.filter(item=OuterRef("pk"))
    imported = Annotation.objects.filter(item=OuterRef("pk"), origin=Annotation.Origin.IMPORTED)
    human = Annotation.objects.filter(item=OuterRef("pk"), origin=Annotation.Origin.HUMAN)
    annotations = (
        Annotation.objects.select_related("annotator")
        .only("id", "item_id", "strength", "origin", "schema_id", "ratings", "spans", "missing", "annotator__username")
        .order_by("id")
    )
    items = (
        Item.objects.filter(project=project)
        .filter(
            Q(annotation_count__gte=F("extra_overlap") + project.overlap)
            | Q(Exists(adjudicated))
            | (Q(Exists(imported)) & ~Q(Exists(human)))
        )
        .prefetch_related(Prefetch("annotations", queryset=annotations))
        .order_by("id")
    )
    return items.filter(source__in=filters.sources) if filters.sources else items


def _chunk_candidates(
    chunk: list[Item], project: Project, filters: VersionFilters, scales: _ProjectScales
) -> Iterator[Candidate]:
    if not chunk:
        return
    latest = {
        adjudication.item_id: adjudication
        for adjudication in Adjudication.objects.filter(item_id__in=[item.pk for item in chunk])
        .order_by("item_id", "-created_at", "-id")
        .distinct("item_id")
    }
    for item in chunk:
        candidate = _candidate(item, latest.get(item.pk), project, scales)
        if candidate is not None and _passes(candidate, filters):
            yield candidate


def _passes(candidate: Candidate, filters: VersionFilters) -> bool:
    if candidate.state not in filters.states or candidate.provenance not in filters.provenance:
        return False
    return candidate.state != "agreed" or candidate.agreement >= filters.min_agreement - 1e-9


def _sign(value: float) -> int:
    return (value > 0) - (value < 0)


def _candidate(
    item: Item, adjudication: Adjudication | None, project: Project, scales: _ProjectScales
) -> Candidate | None:
    annotations = [a for a in item.annotations.all() if a.strength is not None]
    schema_ids = {a.schema_id for a in item.annotations.all() if a.schema_id is not None}
    if adjudication is not None and adjudication.decision in (
        Adjudication.Decision.EXCLUDE,
        Adjudication.Decision.AMBIGUOUS,
    ):
        return None
    if adjudication is not None and adjudication.decision == Adjudication.Decision.LABEL:
        if not adjudication.strength:
            return None  # a tie: no chosen response
        sign = _sign(adjudication.strength)
        return Candidate(
            item=item,
            state="adjudicated",
            provenance=DatasetRow.Provenance.ADJUDICATED,
            a_wins=sign < 0,
            margin=round(min(1.0, abs(adjudication.strength) / scales.current_max), 4),
            agreement=_agreement(annotations, sign),
            weight=1.0,
            ratings=adjudication.ratings or {},
            schema_ids=schema_ids,
        )
    return _consensus(item, annotations, project, scales, schema_ids)


def _consensus(
    item: Item, annotations: list[Annotation], project: Project, scales: _ProjectScales, schema_ids: set[int]
) -> Candidate | None:
    everything = list(item.annotations.all())
    imported_only = bool(everything) and all(a.origin == Annotation.Origin.IMPORTED for a in everything)
    complete = item.annotation_count >= project.overlap + item.extra_overlap
    if not annotations or not (complete or imported_only):
        return None
    raw_mean = sum(a.strength or 0 for a in annotations) / len(annotations)
    if raw_mean == 0:
        return None
    sign = _sign(raw_mean)
    # The margin as annotate.services.exports.pair_margin has it: the mean of strengths each divided by the top
    # of its scale, measured towards the chosen response, never below 0.
    normalised = [
        (a.strength or 0) / SCALE_MAX.get(annotation_scale(a, item, scales.by_schema) or "seven", 3)
        for a in annotations
    ]
    agreement = _agreement(annotations, sign)
    return Candidate(
        item=item,
        state="agreed",
        provenance=DatasetRow.Provenance.IMPORTED if imported_only else DatasetRow.Provenance.CONSENSUS,
        a_wins=sign < 0,
        margin=round(max(0.0, sign * sum(normalised) / len(normalised)), 4),
        agreement=agreement,
        weight=agreement,
        ratings={},
        schema_ids=schema_ids,
    )


def _agreement(annotations: list[Annotation], sign: int) -> float:
    if not annotations:
        return 1.0
    return round(sum(_sign(a.strength or 0) == sign for a in annotations) / len(annotations), 4)
