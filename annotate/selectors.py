"""Reads: what pages and exports show."""

import copy
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import cache
from django.db.models import Exists, F, OuterRef, Prefetch, QuerySet

from .labels import DEFAULT_SCHEMA
from .models import Annotation, Assignment, ImportBatch, Item, LabelSchema, Membership, Project, Role
from .rules import LabelSummary, sign


def projects_with_roles(user: AbstractBaseUser) -> list[tuple[Project, str]]:
    """The projects a user can open, each with the user's role there. Superusers see every project as admins."""
    if getattr(user, "is_superuser", False):
        return [(project, Role.ADMIN) for project in Project.objects.all()]
    memberships = Membership.objects.filter(user_id=user.pk).select_related("project").order_by("project__name")
    return [(membership.project, membership.role) for membership in memberships]


@dataclass(frozen=True)
class Progress:
    done: int
    skipped: int
    remaining: int

    @property
    def total(self) -> int:
        return self.done + self.remaining

    @property
    def percent(self) -> int:
        return round(100 * self.done / self.total) if self.total else 100


def progress_for_annotator(*, project: Project, annotator: AbstractBaseUser) -> Progress:
    """Items this annotator has done, skipped, and could still be given in this project."""
    mine = Assignment.objects.filter(item__project=project, annotator_id=annotator.pk)
    done = Annotation.objects.filter(item__project=project, annotator_id=annotator.pk).count()
    skipped = mine.filter(status=Assignment.Status.SKIPPED).count()
    finished_by_me = Assignment.objects.filter(
        item=OuterRef("pk"),
        annotator_id=annotator.pk,
        status__in=[Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED],
    )
    annotated_by_me = Annotation.objects.filter(item=OuterRef("pk"), annotator_id=annotator.pk)
    remaining = (
        Item.objects.filter(project=project, is_gold=False, annotation_count__lt=F("extra_overlap") + project.overlap)
        .exclude(Exists(finished_by_me))
        .exclude(Exists(annotated_by_me))
        .count()
    )
    return Progress(done=done, skipped=skipped, remaining=remaining)


@dataclass(frozen=True)
class ProjectCounts:
    items: int
    complete: int
    annotations: int


def project_counts(*, project: Project) -> ProjectCounts:
    items = Item.objects.filter(project=project)
    return ProjectCounts(
        items=items.count(),
        complete=items.filter(annotation_count__gte=F("extra_overlap") + project.overlap).count(),
        annotations=Annotation.objects.filter(item__project=project).count(),
    )


def item_label_summary(item: Item | Mapping[str, Any], *, overlap: int) -> LabelSummary:
    """The rules' view of an item (annotate.rules.LabelSummary) from its summary columns, on the Item or in a row
    of values; `overlap` is its project's."""

    def get(name: str) -> Any:
        return item[name] if isinstance(item, Mapping) else getattr(item, name)

    return LabelSummary(
        annotations=get("annotation_count"),
        wanted=overlap + get("extra_overlap"),
        human=get("human_count"),
        strengths=get("strength_count"),
        prefer_a=get("prefer_a_count"),
        prefer_b=get("prefer_b_count"),
        strength_min=get("strength_min"),
        strength_max=get("strength_max"),
        strength_sum=get("strength_sum"),
        rating_spread=get("rating_spread"),
    )


SCALE_MAX = {"seven": 3, "binary": 1}


def annotation_scale(annotation: Annotation, item: Item, schema_scales: dict[int, str]) -> str | None:
    """The scale an annotation's strength is on: an imported one's as the import recorded it with the item,
    else that of the schema version it was made under."""
    if annotation.origin == Annotation.Origin.IMPORTED:
        recorded = item.metadata.get("imported_labels", {}).get(annotation.annotator.username, {}).get("scale")
        if recorded:
            return str(recorded)
    return schema_scales.get(annotation.schema_id) if annotation.schema_id is not None else None


def schema_scales(*, project: Project) -> dict[int, str]:
    """The preference scale of each of a project's schema versions, by schema id."""
    return {
        schema_id: definition.get("preference", {}).get("scale", "seven")
        for schema_id, definition in LabelSchema.objects.filter(project=project).values_list("id", "definition")
    }


def schema_versions(*, project: Project) -> dict[int, int]:
    """The version number of each of a project's schema versions, by schema id."""
    return dict(LabelSchema.objects.filter(project=project).values_list("id", "version"))


def items_for_export(*, project: Project, chunk_size: int = 500) -> Iterator[Item]:
    """A project's items in id order, each with its group and annotations (annotators too), streamed: the
    annotations are fetched a chunk of items at a time, so memory holds one chunk."""
    annotations = Annotation.objects.select_related("annotator").order_by("id")
    return (
        Item.objects.filter(project=project)
        .select_related("group")
        .prefetch_related(Prefetch("annotations", queryset=annotations))
        .order_by("id")
        .iterator(chunk_size=chunk_size)
    )


def project_by_ref(ref: str) -> Project | None:
    """A project by exact name, or else by id: how command-line tools name projects."""
    project = Project.objects.filter(name=ref).first()
    if project is None and ref.isdigit():
        project = Project.objects.filter(pk=int(ref)).first()
    return project


def import_batches_for_project(project: Project) -> QuerySet[ImportBatch]:
    """The project's imports, newest first; views look batches up in here so a foreign id is not found."""
    return ImportBatch.objects.filter(project=project).select_related("created_by").order_by("-created_at", "-id")


@dataclass(frozen=True)
class ImportProgress:
    records_read: int
    bytes_read: int
    bytes_total: int

    @property
    def percent(self) -> int:
        return min(100, round(100 * self.bytes_read / self.bytes_total)) if self.bytes_total else 0


def import_batch_annotation_count(batch: ImportBatch) -> int:
    """Imported annotations on the items a batch created (labels it added to items that were there already,
    from an earlier import, are not counted)."""
    return Annotation.objects.filter(item__import_batch=batch, origin=Annotation.Origin.IMPORTED).count()


def import_progress_cache_key(batch_id: int) -> str:
    return f"concord:import-progress:{batch_id}"


def import_progress(batch: ImportBatch) -> ImportProgress:
    """How far an import has got.

    A running import writes its items in one transaction, so its progress is published through the cache
    (the batch row would show nothing until the commit); a finished one has its counts on the row.
    """
    if batch.status == ImportBatch.Status.RUNNING:
        published = cache.get(import_progress_cache_key(batch.pk))
        if published:
            return ImportProgress(**published)
    if batch.status == ImportBatch.Status.DONE:
        return ImportProgress(
            records_read=batch.records_read, bytes_read=batch.bytes_total, bytes_total=batch.bytes_total
        )
    return ImportProgress(records_read=batch.records_read, bytes_read=batch.bytes_read, bytes_total=batch.bytes_total)


def label_schema_current(*, project: Project) -> LabelSchema:
    """The project's newest schema version. A project that has none yet (made in Django's admin site, say)
    gets an unsaved default, version 0; annotation_submit saves it as version 1 on first use."""
    schema = LabelSchema.objects.filter(project=project).order_by("-version").first()
    return schema or LabelSchema(project=project, version=0, definition=copy.deepcopy(DEFAULT_SCHEMA))


@dataclass(frozen=True)
class GoldScore:
    annotator: str
    answered: int
    preference_right: int
    ratings_checked: int
    ratings_right: int

    @property
    def preference_accuracy(self) -> float | None:
        return self.preference_right / self.answered if self.answered else None

    @property
    def ratings_accuracy(self) -> float | None:
        return self.ratings_right / self.ratings_checked if self.ratings_checked else None


def gold_scores(*, project: Project) -> list[GoldScore]:
    """Each annotator's accuracy on the project's gold items: the preference's sign must match, and each
    expected rating counts as right within one point (HelpSteer2's annotators differ by about that much)."""
    tallies: dict[str, list[int]] = {}
    rows = (
        Annotation.objects.filter(item__project=project, item__is_gold=True, origin=Annotation.Origin.HUMAN)
        .select_related("annotator", "item__gold_answer")
        .order_by("annotator__username", "id")
    )
    for annotation in rows.iterator(chunk_size=2000):
        expected = annotation.item.gold_answer
        tally = tallies.setdefault(annotation.annotator.get_username(), [0, 0, 0, 0])
        if annotation.strength is not None:
            tally[0] += 1
            tally[1] += sign(annotation.strength) == expected.preference_sign
        for side, values in (expected.ratings or {}).items():
            for name, value in values.items():
                given = annotation.ratings.get(side, {}).get(name)
                if given is not None:
                    tally[2] += 1
                    tally[3] += abs(given - value) <= 1
    return [GoldScore(name, *tally) for name, tally in tallies.items()]


def items_for_curator(*, project: Project, gold_only: bool = False) -> QuerySet[Item]:
    items = Item.objects.filter(project=project).select_related("gold_answer").order_by("id")
    return items.filter(is_gold=True) if gold_only else items


def item_annotations(*, item: Item) -> QuerySet[Annotation]:
    return Annotation.objects.filter(item=item).select_related("annotator", "schema").order_by("created_at", "id")


def annotator_is_paused(*, project: Project, annotator: AbstractBaseUser) -> bool:
    return Membership.objects.filter(project=project, user_id=annotator.pk, is_paused=True).exists()
