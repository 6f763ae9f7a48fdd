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
"""

import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import F

from annotate.formats import (
    EXTERNAL_ID_MAX_CHARS,
    SOURCE_MAX_CHARS,
    GroupRecord,
    PairRecord,
    PreferenceRecord,
    PriorAnnotation,
    Record,
    content_hash,
    group_hash,
    pair_hash,
)
from annotate.models import Annotation, ImportBatch, Item, ItemGroup, LabelSchema, Project
from annotate.services.label_summary import item_label_summaries_refresh, items_lock
from annotate.services.schemas import label_schema_ensure

IMPORTED_USER_PREFIX = "imported:"
# uuid5 namespace of imported annotations' submission ids, which are derived from batch, item and annotator.
SUBMISSION_NAMESPACE = uuid.UUID("5b0f3c0e-8f2b-4a4e-9d57-6c1f0a3e2b71")


@dataclass
class _Planned:
    """An item a record asks for (unsaved), the group it is a pair of, and the labels that came with it."""

    item: Item
    group_key: str | None
    annotations: list[PriorAnnotation]


class ImportWriter:
    """Writes one batch's records inside the import's transaction.

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

    def items_in(self, record: Record) -> int:
        return len(record.pairs_for(self.pair_mode)) if isinstance(record, GroupRecord) else 1

    def write(self, records: list[Record]) -> None:
        if not records:
            return
        plans, groups = self._plan(records)
        existing = self._existing([plan.item.content_hash for plan in plans])
        self._write_groups(plans, groups, existing)
        created = self._write_items(plans, existing)
        self._write_annotations(plans, existing, created)

    # Planning: unsaved rows, in record order (the A/B shuffle draws from the seeded generator in that order).

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

    def _common(self, record: Record) -> dict[str, Any]:
        return {
            "project_id": self.batch.project_id,
            "import_batch": self.batch,
            "prompt": record.prompt,
            "source": record.source or self.batch.file_name[:SOURCE_MAX_CHARS],
            "metadata": {"import": {"file": self.batch.file_name, self.unit: record.line}, **record.metadata},
        }

    def _pair(self, record: PreferenceRecord | PairRecord) -> _Planned:
        """An item of a two-response record; chosen/rejected go to A/B by the batch's seeded coin, so a shuffle
        can be repeated. Records that come with A and B (and labels saying which is which) keep their order."""
        context, identity, annotations = "", "", []
        if isinstance(record, PairRecord):
            a, b, label = record.response_a, record.response_b, record.label
            context, identity, annotations = record.context, record.identity, list(record.annotations)
        elif self.rng.random() < 0.5:
            a, b, label = record.chosen, record.rejected, Item.SourceLabel.A
        else:
            a, b, label = record.rejected, record.chosen, Item.SourceLabel.B
        # formats checked every field, and full_clean() per row would cost a query each; so no full_clean.
        item = Item(
            **self._common(record),
            context=context,
            response_a=a,
            response_b=b,
            external_id=record.external_id or f"{self.unit} {record.line}",
            content_hash=content_hash(record.prompt, a, b, context=context, identity=identity),
            source_label=label,
        )
        item.metadata = _with_labels(item.metadata, annotations)
        return _Planned(item, None, annotations)

    def _group(self, record: GroupRecord) -> ItemGroup:
        return ItemGroup(
            **self._common(record),
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
        common = self._common(record)
        # The group keeps the record's metadata; its pairs say where they came from.
        common["metadata"] = _with_labels({"import": common["metadata"]["import"]}, annotations)
        item = Item(
            **common,
            context=record.context,
            response_a=a.text,
            response_b=b.text,
            response_a_index=i,
            response_b_index=j,
            external_id=f"{record.external_id or f'{self.unit} {record.line}'}: {a.key} vs {b.key}"[
                :EXTERNAL_ID_MAX_CHARS
            ],
            content_hash=hash_,
            source_label=label,
        )
        return _Planned(item, key, annotations)

    # Writing.

    def _existing(self, hashes: list[str]) -> dict[str, Item]:
        found = Item.objects.filter(project_id=self.batch.project_id, content_hash__in=set(hashes)).only(
            "id", "content_hash", "group_id", "response_a", "metadata"
        )
        return {item.content_hash: item for item in found}

    def _write_groups(self, plans: list[_Planned], groups: dict[str, ItemGroup], existing: dict[str, Item]) -> None:
        # A group imported before is known by its pair items; its new pairs (another pair mode) join it.
        ids: dict[str, int] = {}
        for plan in plans:
            found = existing.get(plan.item.content_hash)
            if plan.group_key is not None and found is not None and found.group_id is not None:
                ids.setdefault(plan.group_key, found.group_id)
        new = [group for key, group in groups.items() if key not in ids]
        ItemGroup.objects.bulk_create(new)  # PostgreSQL hands back the new primary keys
        ids |= {key: group.pk for key, group in groups.items() if key not in ids}
        for plan in plans:
            if plan.group_key is not None:
                plan.item.group_id = ids[plan.group_key]

    def _write_items(self, plans: list[_Planned], existing: dict[str, Item]) -> set[str]:
        new: dict[str, Item] = {}
        for plan in plans:
            if plan.item.content_hash not in existing:
                new.setdefault(plan.item.content_hash, plan.item)
        # Conflicts are rows another import committed meanwhile: skipped, then found by the lookup below.
        Item.objects.bulk_create(list(new.values()), ignore_conflicts=True)
        existing |= self._existing(list(new))
        return set(new)

    def _write_annotations(self, plans: list[_Planned], existing: dict[str, Item], created: set[str]) -> None:
        wanted: list[tuple[Item, PriorAnnotation]] = []
        for plan in plans:
            item = existing[plan.item.content_hash]
            # Only a pair record can meet its item with A and B the other way round (the same pair imported in
            # the other order): its labels are turned round to match.
            flip = item.response_a != plan.item.response_a
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
