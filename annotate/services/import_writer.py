"""Writing an import's records, a chunk at a time: groups, their pair items, and the labels that came with the data.

Labels that come with the data (PandaLM's annotators, Fine-Grained RLHF's spans, OpenAssistant's ranks) become
annotations with origin IMPORTED, each source annotator an inactive user named "imported:<name>" (a name no one
can sign up with: Django's username rules refuse the colon). They count towards an item's annotation_count,
like any annotation, so an item the data already labels `overlap` times is not handed out again.

Imported labels are not put through labels_clean. The format has checked them (types, ranges, span offsets
inside the response text) and they are stored as the source gave them: they record what other people said
under other rules, which the project's schema may not ask for (a feedback annotation with spans but no
preference, a binary strength, explanations and passage ids on a span). Each points at the project's schema
version current at import time. The scale of an imported strength and the source's raw label are kept in the
item's metadata under "imported_labels", keyed by the imported user's name, which exports read.

Items go in at COPY speed (ItemCopier): a chunk is copied into a TEMP staging table and moved into the items by
one INSERT ... SELECT ... ON CONFLICT DO NOTHING, so the project's unique content hash skips duplicates in SQL.
A chunk without groups or labels, a TRL or HH-RLHF file's every chunk, is written on a second thread while the
next is parsed; one with them is written in step, since its groups and labels need the items' ids.
"""

import json
import queue
import random
import threading
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import F
from django.db.models.fields import NOT_PROVIDED
from django.utils import timezone

from annotate.formats import (
    EXTERNAL_ID_MAX_CHARS,
    SOURCE_MAX_CHARS,
    GroupRecord,
    ImportFormatError,
    PairRecord,
    PreferenceRecord,
    PriorAnnotation,
    Record,
    canonical_prompt,
    content_digest,
    group_hash,
    pair_hash,
)
from annotate.models import Annotation, ImportBatch, Item, ItemGroup, LabelSchema, Project
from annotate.services.label_summary import item_label_summaries_refresh, items_lock
from annotate.services.schemas import label_schema_ensure
from concord import locks

IMPORTED_USER_PREFIX = "imported:"
# uuid5 namespace of imported annotations' submission ids, which are derived from batch, item and annotator.
SUBMISSION_NAMESPACE = uuid.UUID("5b0f3c0e-8f2b-4a4e-9d57-6c1f0a3e2b71")
# The Item fields an import sets, in the order of a planned row; the others take their defaults.
STAGED_FIELDS = (
    "prompt",
    "context",
    "response_a",
    "response_b",
    "group",
    "response_a_index",
    "response_b_index",
    "source",
    "external_id",
    "metadata",
    "content_hash",
    "source_label",
)
# A sort of a chunk's staged rows (by file order) done in memory rather than in temporary files.
STAGE_SORT_MEMORY = "64MB"
_A, _B = int(Item.SourceLabel.A), int(Item.SourceLabel.B)
# A chunk's staged rows into the items, in file order, numbered on from the project's last item: the rows whose
# content the project has not got, the first of each content in the chunk, so that duplicates take no number. The
# project's ITEM_NUMBERS lock, held to the end of the import's transaction, keeps other writers from numbering
# meanwhile; the unique constraint is still there as the last word on duplicates. "Has not got" is a scalar
# subquery, an index probe of item_unique_content per staged row: written as NOT EXISTS, PostgreSQL plans an anti
# join that hashes all the project's items for every chunk, which made a 1M-row import 4x slower.
_INSERT_SQL = """
INSERT INTO {item} ({others}, {staged}, number)
SELECT {values}, {selected},
    (SELECT coalesce(max(number), 0) FROM {item} WHERE project_id = %(project)s) + row_number() OVER (ORDER BY seq)
FROM (
    SELECT DISTINCT ON (content_hash) * FROM {stage} AS staged
    WHERE (
        SELECT 1 FROM {item} WHERE project_id = %(project)s AND content_hash = staged.content_hash LIMIT 1
    ) IS NULL
    ORDER BY content_hash, seq
) AS fresh
ORDER BY seq
ON CONFLICT (project_id, content_hash) DO NOTHING
"""
_DEFERRED_KEYS_SQL = """
SELECT conname FROM pg_constraint
WHERE conrelid = %s::regclass AND contype = 'f' AND condeferrable AND condeferred
ORDER BY conname
"""


@dataclass(slots=True)
class _Planned:
    """An item a record asks for, as the row to stage (STAGED_FIELDS: JSON fields already written as JSON text),
    the group it is a pair of, and the labels that came with it."""

    prompt: str
    response_a: str
    response_b: str
    content_hash: str
    source: str
    external_id: str
    metadata: str
    source_label: int | None
    context: str = ""
    group_id: int | None = None
    response_a_index: int | None = None
    response_b_index: int | None = None
    group_key: str | None = None
    annotations: list[PriorAnnotation] = field(default_factory=list)

    def row(self, seq: int) -> tuple[Any, ...]:
        return (
            seq,
            self.prompt,
            self.context,
            self.response_a,
            self.response_b,
            self.group_id,
            self.response_a_index,
            self.response_b_index,
            self.source,
            self.external_id,
            self.metadata,
            self.content_hash,
            self.source_label,
        )


class ImportWriter:
    """Writes one batch's records inside the import's transaction; use it as a context manager, which waits for
    the rows it still has on their way into the database (or, on the way out of a failed import, drops them).

    Items are known by their content hash: one the project has already (from an earlier import of the same
    file, or HelpSteer2's other file) is not made again, but the record's annotations are added to it, except
    where its annotator has one there already. So importing a file twice adds nothing.
    """

    def __init__(self, *, batch: ImportBatch, rng: random.Random, unit: str = "line") -> None:
        self.batch = batch
        self.rng = rng
        self.unit = unit
        self.project = Project.objects.get(pk=batch.project_id)
        self.pair_mode = self.project.pair_mode
        self.items_planned = 0
        self.annotations_created = 0
        self._schema: LabelSchema | None = None
        self._users: dict[str, int] = {}
        self._source = batch.file_name[:SOURCE_MAX_CHARS]
        # The metadata of a record that has none of its own, but for the line number: {"import": {...}}.
        self._metadata_head = f'{{"import":{{"file":{json.dumps(batch.file_name, ensure_ascii=False)},"{unit}":'
        self._copier = ItemCopier(batch=batch)

    def __enter__(self) -> "ImportWriter":
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._copier.close(failed=error is not None)

    @property
    def items_created(self) -> int:
        return self._copier.items_created

    def items_in(self, record: Record) -> int:
        return len(record.pairs_for(self.pair_mode)) if isinstance(record, GroupRecord) else 1

    def write(self, records: list[Record]) -> None:
        if not records:
            return
        plans, groups = self._plan(records)
        if not groups and not any(plan.annotations for plan in plans):
            # Nothing here needs the items' ids: they are written while the caller reads on.
            self._copier.submit(plans)
            return
        self._copier.drain()
        existing = self._existing([plan.content_hash for plan in plans])
        self._write_groups(plans, groups, existing)
        created = self._copier.insert(plans)
        # The items just written, and a chunk's repeats of them, found by their content.
        existing |= self._existing([plan.content_hash for plan in plans if plan.content_hash not in existing])
        self._write_annotations(plans, existing, created)

    # Planning: rows, in record order (the A/B shuffle draws from the seeded generator in that order).

    def _plan(self, records: list[Record]) -> tuple[list[_Planned], dict[str, ItemGroup]]:
        plans: list[_Planned] = []
        groups: dict[str, ItemGroup] = {}
        for record in records:
            if isinstance(record, GroupRecord):
                key = group_hash(record)
                groups.setdefault(key, self._group(record))
                plans += [self._group_pair(record, key, i, j) for i, j in record.pairs_for(self.pair_mode)]
            else:
                plans.append(self._pair(record))
        self.items_planned += len(plans)
        return plans, groups

    def _metadata(self, record: Record, labels: list[PriorAnnotation]) -> dict[str, Any]:
        return _with_labels(
            {"import": {"file": self.batch.file_name, self.unit: record.line}, **record.metadata}, labels
        )

    def _pair(self, record: PreferenceRecord | PairRecord) -> _Planned:
        """An item of a two-response record; chosen/rejected go to A/B by the batch's seeded coin, so a shuffle
        can be repeated. Records that come with A and B (and labels saying which is which) keep their order."""
        context, identity, annotations = "", "", []
        if isinstance(record, PairRecord):
            a, b, label = record.response_a, record.response_b, record.label
            context, identity, annotations = record.context, record.identity, list(record.annotations)
        elif self.rng.random() < 0.5:
            a, b, label = record.chosen, record.rejected, _A
        else:
            a, b, label = record.rejected, record.chosen, _B
        prompt = canonical_prompt(record.prompt)
        if record.metadata or annotations:
            metadata = _json(self._metadata(record, annotations), record.line, self.unit)
        else:
            metadata = f"{self._metadata_head}{record.line}}}}}"
        return _Planned(
            prompt=prompt,
            context=context,
            response_a=a,
            response_b=b,
            external_id=record.external_id or f"{self.unit} {record.line}",
            content_hash=content_digest(prompt, a, b, context=context, identity=identity),
            source=record.source or self._source,
            metadata=metadata,
            source_label=label,
            annotations=annotations,
        )

    def _group(self, record: GroupRecord) -> ItemGroup:
        return ItemGroup(
            project_id=self.batch.project_id,
            import_batch=self.batch,
            prompt=record.prompt,
            source=record.source or self._source,
            metadata=self._metadata(record, []),
            context=record.context,
            responses=[{"key": r.key, "text": r.text, "meta": r.meta} for r in record.responses],
            external_id=record.external_id or f"{self.unit} {record.line}",
        )

    def _group_pair(self, record: GroupRecord, key: str, i: int, j: int) -> _Planned:
        hash_ = pair_hash(key, i, j)
        annotations = record.annotations_for(i, j)
        label = record.label_for(i, j)
        # Ranked groups list their best response first, so showing i as A would give the answer away by
        # position: the batch's seeded coin decides which side each response goes to.
        if record.ranking is not None and self.rng.random() < 0.5:
            i, j = j, i
            annotations = [annotation.swapped() for annotation in annotations]
            label = -label if label is not None else None
        a, b = record.responses[i], record.responses[j]
        # The group keeps the record's metadata; its pairs say where they came from.
        metadata = _with_labels({"import": {"file": self.batch.file_name, self.unit: record.line}}, annotations)
        return _Planned(
            prompt=canonical_prompt(record.prompt),
            context=record.context,
            response_a=a.text,
            response_b=b.text,
            response_a_index=i,
            response_b_index=j,
            external_id=f"{record.external_id or f'{self.unit} {record.line}'}: {a.key} vs {b.key}"[
                :EXTERNAL_ID_MAX_CHARS
            ],
            content_hash=hash_,
            source=record.source or self._source,
            metadata=_json(metadata, record.line, self.unit),
            source_label=label,
            group_key=key,
            annotations=annotations,
        )

    # Writing the chunks that carry groups or labels, which need the items' ids: in step with the caller.

    def _existing(self, hashes: list[str]) -> dict[str, Item]:
        found = Item.objects.filter(project_id=self.batch.project_id, content_hash__in=set(hashes)).only(
            "id", "content_hash", "group_id", "response_a", "metadata"
        )
        return {item.content_hash: item for item in found}

    def _write_groups(self, plans: list[_Planned], groups: dict[str, ItemGroup], existing: dict[str, Item]) -> None:
        # A group imported before is known by its pair items; its new pairs (another pair mode) join it.
        ids: dict[str, int] = {}
        for plan in plans:
            found = existing.get(plan.content_hash)
            if plan.group_key is not None and found is not None and found.group_id is not None:
                ids.setdefault(plan.group_key, found.group_id)
        new = [group for key, group in groups.items() if key not in ids]
        ItemGroup.objects.bulk_create(new)  # PostgreSQL hands back the new primary keys
        ids |= {key: group.pk for key, group in groups.items() if key not in ids}
        for plan in plans:
            if plan.group_key is not None:
                plan.group_id = ids[plan.group_key]

    def _write_annotations(self, plans: list[_Planned], existing: dict[str, Item], created: set[str]) -> None:
        wanted: list[tuple[Item, PriorAnnotation]] = []
        for plan in plans:
            item = existing[plan.content_hash]
            # Only a pair record can meet its item with A and B the other way round (the same pair imported in
            # the other order): its labels are turned round to match.
            flip = item.response_a != plan.response_a
            wanted += [(item, label.swapped() if flip else label) for label in plan.annotations]
        if not wanted:
            return
        users = {name: self._user(name) for name in {label.annotator for _, label in wanted}}
        taken = set(
            Annotation.objects.filter(
                item_id__in={item.pk for item, _ in wanted}, annotator_id__in=users.values()
            ).values_list("item_id", "annotator_id")
        )
        rows: list[Annotation] = []
        counts: Counter[int] = Counter()
        relabelled: dict[int, Item] = {}
        for item, label in wanted:
            if (item.pk, users[label.annotator]) in taken:
                continue
            taken.add((item.pk, users[label.annotator]))
            rows.append(self._annotation(item, label, users[label.annotator]))
            counts[item.pk] += 1
            if item.content_hash not in created and _label_entry(label):
                item.metadata = _with_labels(item.metadata, [label])
                relabelled[item.pk] = item
        # Locked in id order before any is written, so that an annotator's submit on one of them waits for this
        # import and its label summary refresh then sees these annotations too.
        items_lock(item_ids=counts)
        Annotation.objects.bulk_create(rows)
        _count_annotations(counts)
        item_label_summaries_refresh(item_ids=counts)
        Item.objects.bulk_update(list(relabelled.values()), ["metadata"])
        self.annotations_created += len(rows)

    def _annotation(self, item: Item, label: PriorAnnotation, annotator_id: int) -> Annotation:
        if self._schema is None:
            self._schema = label_schema_ensure(project=self.project)
        return Annotation(
            item_id=item.pk,
            annotator_id=annotator_id,
            schema=self._schema,
            origin=Annotation.Origin.IMPORTED,
            strength=label.strength,
            justification=label.justification,
            ratings=label.ratings,
            spans=label.spans,
            missing=label.missing,
            corrections=label.corrections,
            # Derived, not random: the same batch writing the same annotation gets the same id.
            submission_uuid=uuid.uuid5(SUBMISSION_NAMESPACE, f"{self.batch.pk}:{item.pk}:{annotator_id}"),
        )

    def _user(self, name: str) -> int:
        if name not in self._users:
            user, created = get_user_model().objects.get_or_create(
                username=imported_username(name), defaults={"is_active": False}
            )
            if created:
                user.set_unusable_password()
                user.save(update_fields=["password"])
            self._users[name] = user.pk
        return self._users[name]


class ItemCopier:
    """Writes planned items through a TEMP staging table: COPY a chunk in, then one INSERT ... SELECT moves into
    the items, in file order and numbered on from the project's last item, the rows whose content hash the project
    has not got: SQL, not Python, skips duplicates within the file and of the project's items. The project's
    ITEM_NUMBERS lock, taken first and held to the end of the transaction, makes this import the project's only
    writer of items meanwhile (another import into the same project waits for it). The table goes with the
    transaction, so a failed import leaves nothing behind.

    submit() copies a chunk in, then hands its INSERT to a worker thread, which runs it on the import's own
    connection (psycopg's connections may be shared by threads), and so inside its transaction, while the caller
    parses the next chunk: PostgreSQL and the parser each keep a core busy. insert() writes a chunk in step and
    says which hashes it added. In between, the caller touches the database only after drain(); close() ends it.
    """

    def __init__(self, *, batch: ImportBatch) -> None:
        if not connection.in_atomic_block:
            raise RuntimeError("an import writes its items inside one transaction (transaction.atomic)")
        self._stage = f"concord_import_stage_{batch.pk}"
        self._next_seq = 0
        self.items_created = 0
        # The worker's orders: True to move the staged chunk into the items, None to stop.
        self._moves: queue.Queue[bool | None] = queue.Queue()
        self._worker: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._statements(batch)
        self._project_id = batch.project_id
        with connection.cursor() as cursor:
            # The project's items are numbered by one writer at a time, to the end of this transaction.
            cursor.execute("SELECT pg_advisory_xact_lock(%s, %s)", [locks.ITEM_NUMBERS, batch.project_id])
            cursor.execute(self._create_sql)
            cursor.execute(f"SET LOCAL work_mem = '{STAGE_SORT_MEMORY}'")
            # The planner overestimates the set-based statements of an import (the label summary refresh of a
            # chunk's items above all) and would spend seconds compiling each with LLVM to save milliseconds.
            cursor.execute("SET LOCAL jit = off")
            # Django's foreign keys are checked at commit, a query per row and key: checked as each chunk goes
            # in, they run while the caller parses on, rather than all at the end.
            cursor.execute(_DEFERRED_KEYS_SQL, [Item._meta.db_table])
            self._keys = ", ".join(connection.ops.quote_name(name) for (name,) in cursor.fetchall())
            if self._keys:
                cursor.execute(f"SET CONSTRAINTS {self._keys} IMMEDIATE")
        self._connection = connection.connection

    def _statements(self, batch: ImportBatch) -> None:
        """The staging table, its COPY, and the INSERT that moves its rows into the items."""
        fields = {f.name: f for f in Item._meta.concrete_fields}
        staged = [fields[name] for name in STAGED_FIELDS]
        # Every other column gets what Django would give it: the batch's ids, the time, the field's default.
        others = [
            f
            for f in Item._meta.concrete_fields
            if not f.primary_key and f.name not in STAGED_FIELDS and f.db_default is NOT_PROVIDED
        ]
        ids = {"project": batch.project_id, "import_batch": batch.pk}
        self._values = [f.get_db_prep_save(ids.get(f.name, f.get_default()), connection) for f in others]
        self._now_at = [n for n, f in enumerate(others) if _stamped(f)]
        # Binary COPY (no escaping on either side) into plain types: text for text and JSON, which the INSERT
        # casts, so that the column's own checks (JSON syntax, a varchar's length) apply there.
        self._types = ["integer", *(_stage_type(f.db_type(connection) or "") for f in staged)]
        columns = ", ".join(f.column for f in staged)
        definition = ", ".join(f"{f.column} {kind}" for f, kind in zip(staged, self._types[1:], strict=True))
        self._create_sql = f"CREATE TEMP TABLE {self._stage} (seq integer, {definition}) ON COMMIT DROP"
        self._copy_sql = f"COPY {self._stage} (seq, {columns}) FROM STDIN (FORMAT BINARY)"
        self._insert_sql = _INSERT_SQL.format(
            item=Item._meta.db_table,
            others=", ".join(f.column for f in others),
            values=", ".join(f"%(v{n})s" for n in range(len(others))),
            staged=columns,
            selected=", ".join(_from_stage(f.column, f.db_type(connection) or "") for f in staged),
            stage=self._stage,
        )

    def submit(self, plans: list[_Planned]) -> None:
        """Copy these items in, then move them into the items on the worker while the caller parses on."""
        self._copy(self._rows(plans))
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name=self._stage, daemon=True)
            self._worker.start()
        self._moves.put(True)

    def insert(self, plans: list[_Planned]) -> set[str]:
        """Write these items now; the content hashes of those that were added."""
        self._copy(self._rows(plans))
        return self._move(returning=True)

    def drain(self) -> None:
        """Wait until the worker has moved the chunk handed to it."""
        self._moves.join()
        if self._failure is not None:
            raise self._failure

    def close(self, *, failed: bool) -> None:
        if self._worker is not None:
            self._moves.join()  # on the way out of a failed import too: it must let go of the connection
            self._moves.put(None)
            self._worker.join()
            self._worker = None
        if not failed:
            self.drain()
            with connection.cursor() as cursor:
                cursor.execute(f"DROP TABLE {self._stage}")
                if self._keys:
                    cursor.execute(f"SET CONSTRAINTS {self._keys} DEFERRED")

    def _rows(self, plans: list[_Planned]) -> list[tuple[Any, ...]]:
        first = self._next_seq
        self._next_seq += len(plans)
        return [plan.row(first + n) for n, plan in enumerate(plans)]

    def _copy(self, rows: list[tuple[Any, ...]]) -> None:
        """COPY a chunk into the staging table, on the caller's thread: the worker does one statement a chunk,
        which it waits for without the GIL, rather than hand the GIL back and forth for every buffer it sends."""
        self.drain()
        with self._connection.cursor() as cursor:
            cursor.execute(f"TRUNCATE {self._stage}")
            with cursor.copy(self._copy_sql) as copy:
                copy.set_types(self._types)
                for row in rows:
                    copy.write_row(row)

    def _work(self) -> None:
        while self._moves.get() is not None:
            try:
                self._move(returning=False)
            except BaseException as error:  # the caller raises it, at its next call
                self._failure = error
            finally:
                self._moves.task_done()
        self._moves.task_done()

    def _move(self, *, returning: bool) -> set[str]:
        """The staged chunk into the items."""
        values = list(self._values)
        for n in self._now_at:
            values[n] = timezone.now()
        params = {f"v{n}": value for n, value in enumerate(values)} | {"project": self._project_id}
        with self._connection.cursor() as cursor:
            cursor.execute(self._insert_sql + (" RETURNING content_hash" if returning else ""), params)
            added = {hash_ for (hash_,) in cursor.fetchall()} if returning else set()
            self.items_created += cursor.rowcount
        return added


def _stamped(field: Any) -> bool:
    """A field Django sets to the time of saving (auto_now, auto_now_add)."""
    return bool(getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False))


def _stage_type(db_type: str) -> str:
    """The staging column's type for an item column's: the integers as they are, anything else as text."""
    return db_type if db_type in ("smallint", "integer", "bigint") else "text"


def _from_stage(column: str, db_type: str) -> str:
    """A staged column as its item column's type: text goes in by assignment, which keeps a varchar's length
    check (an explicit cast would cut the text short); JSON is cast."""
    if db_type == "text" or db_type.startswith("varchar") or _stage_type(db_type) == db_type:
        return column
    return f"{column}::{db_type}"


def _json(value: dict[str, Any], line: int, unit: str) -> str:
    """JSON text for a jsonb column, which has no NaN or Infinity (Python's json.loads reads them)."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except ValueError:
        raise ImportFormatError(
            "the record holds NaN or Infinity, which JSON does not allow", line=line, unit=unit
        ) from None


def imported_username(annotator: str) -> str:
    return f"{IMPORTED_USER_PREFIX}{annotator}"


def _label_entry(label: PriorAnnotation) -> dict[str, Any]:
    return {key: value for key, value in (("scale", label.scale), ("raw", label.raw)) if value is not None}


def _with_labels(metadata: dict[str, Any], labels: list[PriorAnnotation]) -> dict[str, Any]:
    entries = {imported_username(label.annotator): _label_entry(label) for label in labels if _label_entry(label)}
    if not entries:
        return metadata
    return {**metadata, "imported_labels": {**metadata.get("imported_labels", {}), **entries}}


def _count_annotations(counts: Counter[int]) -> None:
    """Add each item's new annotations to its annotation_count: one UPDATE per distinct number added."""
    by_count: defaultdict[int, list[int]] = defaultdict(list)
    for item_id, added in counts.items():
        by_count[added].append(item_id)
    for added, item_ids in by_count.items():
        Item.objects.filter(pk__in=item_ids).update(annotation_count=F("annotation_count") + added)
