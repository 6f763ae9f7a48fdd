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

How they are read, at a million items: the database picks the items whose state is one the filters take
(annotate.rules.item_state as curation.rule_sql has it in SQL, over each item's label summary columns), then hands
over a chunk of them at a time, each with its annotations aggregated into one JSON array; no model instance is
built per item or annotation. The consensus, agreement, margin and labels are computed from those annotations.
"""

import hashlib
import json
import queue
import struct
import threading
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple, TypeVar

import orjson
from django.contrib.auth import get_user_model
from django.db import connection, connections

from annotate.models import Annotation, Item, Membership, Project
from annotate.rules import ItemState, sign
from annotate.selectors import SCALE_MAX, annotation_scale, label_schema_current, schema_scales
from concord.errors import FieldError
from curation import rule_sql
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
ITEM_CHUNK = 2000
T = TypeVar("T")


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
    return prompt_json_hash(canonical_json(prompt))


def prompt_json_hash(prompt_json: str) -> str:
    """prompt_hash of a prompt already in canonical JSON."""
    return hashlib.sha256(prompt_json.encode()).hexdigest()


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
    """json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False), the text content hashes are
    made of. orjson writes the same text several times faster (a freeze writes millions), except for what it
    refuses (integers over 64 bits, keys that are not text, lone surrogates) and where the two write numbers
    differently: floats under 1e-4 in size ("0.00001" or "1.5e-6" where json writes "1e-05", "1.5e-06") and NaN or
    infinity (null). Text that may hold such a number (a digit then an exponent, "0.0000", "null") is therefore
    made again by json, so that the hash never depends on which encoder ran (tests/curation/test_canonical_json.py).
    """
    try:
        text: str = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:  # orjson.JSONEncodeError is one
        return _canonical(value)
    return _canonical(value) if _may_hold_numbers_written_apart(text) else text


def _may_hold_numbers_written_apart(text: str) -> bool:
    """Whether orjson's text may hold a number json writes otherwise: "null", "0.0000", or a digit then "e-" or
    "e+" (both write exponents so). By substring search, which is several times faster than a regular expression."""
    if "null" in text or "0.0000" in text:
        return True
    for mark in ("e-", "e+"):
        at = text.find(mark)
        while at > 0:
            if text[at - 1].isdigit():
                return True
            at = text.find(mark, at + 2)
    return False


# json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False), its encoder made once.
_canonical = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode


def json_loads(text: str) -> Any:
    """json.loads of the JSON PostgreSQL hands over, by orjson where it can (the same values, faster); json for
    what orjson refuses (integers over 64 bits)."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)


@dataclass(frozen=True)
class PlannedRow:
    """A row about to be written: its DatasetRow fields (split included, position not yet), and what the version's
    manifest and stats count of it. `prompt_json`, when the maker has it: the prompt in canonical JSON."""

    fields: dict[str, Any]
    state: str
    agreement: float
    schema_ids: set[int]
    prompt_json: str | None = None


@dataclass(slots=True)
class ItemFacts:
    """What a row needs of an item, read straight from the database (no model instance): its texts, and what
    the rules read besides its annotations. `metadata` holds only the labels' scales an import recorded."""

    pk: int
    prompt: Any
    prompt_json: str  # the prompt in canonical JSON: what prompt_hash hashes and the row's content hash covers
    context: str
    response_a: str
    response_b: str
    source: str
    is_gold: bool
    extra_overlap: int
    metadata: dict[str, Any]


class Label(NamedTuple):
    """One annotation as the rules read it, from the database's JSON (no model instance)."""

    pk: int
    annotator_id: int
    strength: int | None
    origin: str
    schema_id: int | None
    ratings: Any
    spans: Any
    missing: Any
    username: str | None  # imported annotations only: an import records their scale by annotator name

    @property
    def annotator(self) -> "Label":
        """annotate.selectors.annotation_scale reads annotation.annotator.username."""
        return self


class Decision(NamedTuple):
    """An adjudicated item's final label: its latest curator decision's strength and ratings."""

    strength: int | None
    ratings: dict[str, Any]


@dataclass
class Candidate:
    """A qualifying item, before it has a position and a split."""

    item: ItemFacts
    labels: list[Label]
    state: str
    provenance: str
    a_wins: bool
    margin: float
    agreement: float
    weight: float
    ratings: dict[str, Any]
    schema_ids: set[int]

    def planned(self, *, split: str) -> PlannedRow:
        fields = self.row_fields(split=split)
        return PlannedRow(fields, self.state, self.agreement, self.schema_ids, self.item.prompt_json)

    def row_fields(self, *, split: str) -> dict[str, Any]:
        item = self.item
        chosen, rejected = ("a", "b") if self.a_wins else ("b", "a")
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
            "annotation_ids": sorted(label.pk for label in self.labels),
            "labels": {
                "chosen": _side_labels(self.labels, chosen, self.ratings.get(chosen)),
                "rejected": _side_labels(self.labels, rejected, self.ratings.get(rejected)),
            },
        }


def _side_labels(annotations: list[Label], side: str, ratings: dict[str, Any] | None) -> dict[str, Any]:
    """One response's labels: the mean of each rating (or the adjudicated ratings), and every annotator's spans
    and missing-information entries on it, each with the annotation it came from."""
    return {
        "ratings": _mean_ratings(annotations, side) if ratings is None else ratings,
        "spans": [{**s, "annotation_id": a.pk} for a in annotations for s in a.spans if s.get("response") == side],
        "missing": [{**m, "annotation_id": a.pk} for a in annotations for m in a.missing if m.get("response") == side],
    }


def _mean_ratings(annotations: list[Label], side: str) -> dict[str, float]:
    """Each attribute's mean rating of one response over the annotations that rate it with a number, rounded to
    4 places, by name."""
    values: dict[str, list[float]] = {}
    for annotation in annotations:
        for name, value in (annotation.ratings or {}).get(side, {}).items():
            if isinstance(value, _NUMBER):
                found = values.get(name)
                if found is None:
                    values[name] = [value]
                else:
                    found.append(value)
    return {name: mean4(found) for name, found in sorted(values.items())}


def mean4(values: list[float]) -> float:
    """round(sum(values) / len(values), 4), by integer arithmetic where that is exact: whole-number values (as
    ratings are) and fewer than 32 of them. Then k = the nearest integer to 10^4 x the mean is never a tie (a
    tie needs 2^5 to divide the count), the double nearest the mean is far closer to it than to any tie, and
    k / 10^4 is the double nearest the rounded decimal, as round's is."""
    total, count = sum(values), len(values)
    if type(total) is int and count < 32 and -(2**40) < total < 2**40:
        return (20000 * total + count) // (2 * count) / 10000
    return round(total / count, 4)


_NUMBER = (int, float)


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


def candidates(*, project: Project, filters: VersionFilters, chunk_size: int | None = None) -> Iterator[Candidate]:
    """The project's items that qualify under `filters`, in id order, read a chunk at a time."""
    for chunk in candidate_chunks(project=project, filters=filters, chunk_size=chunk_size):
        yield from chunk


def candidate_chunks(
    *, project: Project, filters: VersionFilters, chunk_size: int | None = None
) -> Iterator[Iterator[Candidate]]:
    """candidates, a chunk (ITEM_CHUNK items unless told) at a time: taking a chunk reads its items in one query
    (read_ahead: a thread on a connection of its own reads the next chunk meanwhile), and making its
    candidates runs none, so a writer may keep a COPY open meanwhile."""
    chunk_size = chunk_size or ITEM_CHUNK
    context = _context(project, filters.consensus)
    ids, states = qualifying_items(project=project, filters=filters)
    chunks = [
        (ids[start : start + chunk_size], states[start : start + chunk_size])
        for start in range(0, len(ids), chunk_size)
    ]
    reads = partial(map, _facts, chunks)
    with read_ahead(reads) if reading_ahead_pays(len(chunks)) else nullcontext(reads()) as read:
        for (chunk_ids, codes), rows in zip(chunks, read, strict=True):
            chunk_states = dict(zip(chunk_ids, (STATES[code] for code in codes), strict=True))
            yield _chunk_candidates((_record(row, chunk_states) for row in rows), filters, context)


@contextmanager
def read_ahead(reads: Callable[[], Iterator[T]]) -> Iterator[Iterator[T]]:
    """What `reads()` yields, taken by a thread on a database connection of its own one step ahead of the
    caller, so the database reads the next chunk while Python works on this one. Only for reads outside a
    transaction (reading_ahead_pays): another connection does not see what this one has not committed."""
    ready: queue.Queue[tuple[Any, BaseException | None]] = queue.Queue(maxsize=1)
    stop = threading.Event()
    end = object()

    def offer(entry: tuple[Any, BaseException | None]) -> None:
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return
            except queue.Full:
                continue

    def read() -> None:
        try:
            for chunk in reads():
                if stop.is_set():
                    return
                offer((chunk, None))
            offer((end, None))
        except BaseException as error:  # the caller raises it
            offer((end, error))
        finally:
            connections.close_all()  # this thread's own

    def taken() -> Iterator[T]:
        while True:
            chunk, error = ready.get()
            if error is not None:
                raise error
            if chunk is end:
                return
            yield chunk

    thread = threading.Thread(target=read, name="read-ahead", daemon=True)
    thread.start()
    try:
        yield taken()
    finally:
        stop.set()
        thread.join()


def reading_ahead_pays(chunks: int) -> bool:
    """Whether read_ahead may read these many chunks: more than one, outside a transaction (a version frozen in
    a request is one chunk, and a second connection would buy nothing)."""
    return chunks > 1 and not connection.in_atomic_block


def qualifying_items(*, project: Project, filters: VersionFilters) -> "tuple[array[int], bytes]":
    """The ids, in order, of the project's items (of the filters' sources) whose state is one the filters take,
    and each one's state (its index in STATES): annotate.rules.item_state as curation.rule_sql has it in SQL over
    the items' label summary columns, which the services keep in step with the annotations. One pass over the
    project's items, kept compact (a million items in 9 MB)."""
    items = (
        Item.objects.filter(project=project)
        .annotate(spread=rule_sql.strength_spread(), state=rule_sql.item_state(project))
        .filter(state__in=list(filters.states))
    )
    if filters.sources:
        items = items.filter(source__in=filters.sources)
    ids, states = array("q"), bytearray()
    for pk, state in items.order_by("pk").values_list("pk", "state").iterator(chunk_size=10_000):
        ids.append(pk)
        states.append(STATES.index(state))
    return ids, bytes(states)


# One row per item, in id order: its texts, its annotations in id order as one JSON array of [id, annotator,
# strength, origin, schema, ratings, spans, missing, username (imported annotations only)], and, for an item
# whose state is adjudicated, its latest decision's strength and ratings.
_FACTS_SQL = """
SELECT item.id, item.prompt::text, item.context, item.response_a, item.response_b, item.source, item.is_gold,
       item.extra_overlap, (item.metadata -> 'imported_labels')::text, labels.list, latest.strength,
       latest.ratings::text
FROM unnest(%s::bigint[], %s::boolean[]) AS target(id, decided)
JOIN {item} AS item ON item.id = target.id
LEFT JOIN LATERAL (
    SELECT json_agg(json_build_array(
               a.id, a.annotator_id, a.strength, a.origin, a.schema_id, a.ratings, a.spans, a.missing,
               CASE WHEN a.origin = 'imported' THEN (SELECT person.username FROM {user} AS person
                                                     WHERE person.id = a.annotator_id) END
           ) ORDER BY a.id)::text AS list
    FROM {annotation} AS a WHERE a.item_id = item.id
) AS labels ON true
LEFT JOIN LATERAL (
    SELECT decision.strength, decision.ratings FROM {adjudication} AS decision
    WHERE target.decided AND decision.item_id = item.id ORDER BY decision.created_at DESC, decision.id DESC LIMIT 1
) AS latest ON true
ORDER BY item.id
"""


@dataclass(frozen=True)
class ItemRecord:
    """An item as the database hands it over: its facts, its annotations and its state (annotate.rules), with
    the latest curator decision of an adjudicated one."""

    item: ItemFacts
    labels: list[Label]
    state: str
    decision: Decision | None


def _facts(chunk: "tuple[array[int], bytes]") -> list[tuple[Any, ...]]:
    """The _FACTS_SQL rows of a chunk of qualifying items (ids, states), in one query on this thread's
    connection."""
    sql = _FACTS_SQL.format(
        item=Item._meta.db_table,
        annotation=Annotation._meta.db_table,
        adjudication=Adjudication._meta.db_table,
        user=get_user_model()._meta.db_table,
    )
    ids, codes = chunk
    adjudicated = STATES.index(ItemState.ADJUDICATED)
    with connection.cursor() as cursor:
        cursor.execute(sql, [list(ids), [code == adjudicated for code in codes]])
        return cursor.fetchall()


def _record(row: tuple[Any, ...], states: dict[int, str]) -> ItemRecord:
    """A _FACTS_SQL row as an ItemRecord: JSON decoded as the models decode it, the prompt also in canonical JSON."""
    pk, prompt_text, context, a, b, source, gold, extra, imported, labels, strength, ratings = row
    prompt = json_loads(prompt_text)
    metadata = {} if imported is None else {"imported_labels": json_loads(imported)}
    item = ItemFacts(pk, prompt, canonical_json(prompt), context, a, b, source, gold, extra, metadata)
    decision = Decision(strength, json_loads(ratings)) if ratings is not None else None
    return ItemRecord(item, [Label(*entry) for entry in json_loads(labels)] if labels else [], states[pk], decision)


def _chunk_candidates(
    records: Iterator[ItemRecord], filters: VersionFilters, context: _ProjectContext
) -> Iterator[Candidate]:
    for record in records:
        candidate = _candidate(record, context)
        if candidate is not None and _passes(candidate, filters):
            yield candidate


def _passes(candidate: Candidate, filters: VersionFilters) -> bool:
    if candidate.state not in filters.states or candidate.provenance not in filters.provenance:
        return False
    return candidate.state == ItemState.ADJUDICATED or candidate.agreement >= filters.min_agreement - 1e-9


def _candidate(record: ItemRecord, context: _ProjectContext) -> Candidate | None:
    item, everything, state = record.item, record.labels, record.state
    schema_ids = {a.schema_id for a in everything if a.schema_id is not None}
    rated = [a for a in everything if a.strength is not None]
    if state == ItemState.ADJUDICATED:
        assert record.decision is not None
        return _adjudicated(item, everything, record.decision, rated, context, schema_ids)
    consensus = _consensus(item, rated, context)
    agreement = _agreement(rated, consensus.side)
    if consensus.side == 0 or agreement == 0:
        # A tie or nothing to go on: no chosen response. Nor a side no annotator took (Dawid-Skene may infer one).
        return None
    imported_only = bool(everything) and all(a.origin != Annotation.Origin.HUMAN for a in everything)
    return Candidate(
        item=item,
        labels=everything,
        state=state,
        provenance=DatasetRow.Provenance.IMPORTED if imported_only else DatasetRow.Provenance.CONSENSUS,
        a_wins=consensus.side < 0,
        margin=_margin(item, rated, consensus.side, context),
        agreement=agreement,
        weight=round(consensus.confidence, 4),
        ratings={},
        schema_ids=schema_ids,
    )


def _adjudicated(
    item: ItemFacts,
    everything: list[Label],
    adjudication: Decision,
    rated: list[Label],
    context: _ProjectContext,
    schema_ids: set[int],
) -> Candidate | None:
    side = sign(adjudication.strength or 0)
    if side == 0:
        return None  # a tie: no chosen response
    return Candidate(
        item=item,
        labels=everything,
        state=ItemState.ADJUDICATED,
        provenance=DatasetRow.Provenance.ADJUDICATED,
        a_wins=side < 0,
        margin=round(min(1.0, abs(adjudication.strength or 0) / context.current_max), 4),
        agreement=_agreement(rated, side),
        weight=1.0,  # the curator's decision counts fully
        ratings=adjudication.ratings or {},
        schema_ids=schema_ids,
    )


def _consensus(item: ItemFacts, rated: list[Label], context: _ProjectContext) -> Consensus:
    strengths = [float(a.strength or 0) for a in rated]
    if context.rule == "weighted":
        # Imported annotators are not members: their labels count fully.
        return weighted_consensus(strengths, [context.weights.get(a.annotator_id, 1.0) for a in rated])
    if context.rule == "dawid_skene":
        posterior = context.posteriors.get(item.pk)
        return posterior_consensus(posterior) if posterior is not None else NO_CONSENSUS
    return mean_consensus(strengths)


def _margin(item: ItemFacts, rated: list[Label], side: int, context: _ProjectContext) -> float:
    """The mean strength towards the chosen side, each divided by the top of its scale, never below 0."""
    normalised = [(a.strength or 0) / SCALE_MAX.get(_scale(a, item, context.scales) or "seven", 3) for a in rated]
    return round(max(0.0, side * sum(normalised) / len(normalised)), 4) if normalised else 0.0


# annotate.selectors.annotation_scale reads an annotation's origin, schema and annotator's name and its item's
# metadata, which a Label and ItemFacts carry as the models do.
_scale: Callable[[Any, Any, dict[int, str]], str | None] = annotation_scale


def _agreement(annotations: list[Label], side: int) -> float:
    if not annotations:
        return 1.0
    return round(sum(sign(a.strength or 0) == side for a in annotations) / len(annotations), 4)
