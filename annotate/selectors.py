"""Reads: what pages and exports show."""

import copy
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.cache import cache
from django.db import connection
from django.db.models import Exists, F, Max, OuterRef, Prefetch, QuerySet
from django.utils import timezone

from .labels import DEFAULT_SCHEMA
from .models import Annotation, Assignment, GoldAnswer, ImportBatch, Item, LabelSchema, Membership, Project, Role
from .rules import LabelSummary


def projects_with_roles(user: AbstractBaseUser) -> list[tuple[Project, str]]:
    """The projects a user can open, each with the user's role there. Superusers see every project as admins."""
    if getattr(user, "is_superuser", False):
        return [(project, Role.ADMIN) for project in Project.objects.all()]
    memberships = Membership.objects.filter(user_id=user.pk).select_related("project").order_by("project__name")
    return [(membership.project, membership.role) for membership in memberships]


# The label page counts what is left for an annotator up to this many items: past it, "1000+" says enough, and the
# count stays one bounded index scan however big the project is.
REMAINING_CAP = 1000


@dataclass(frozen=True)
class Progress:
    done: int
    skipped: int
    remaining: int  # at most REMAINING_CAP
    remaining_capped: bool = False  # more than REMAINING_CAP are left

    @property
    def total(self) -> int:
        return self.done + self.remaining

    @property
    def percent(self) -> int:
        if self.remaining_capped:
            return round(100 * self.done / (self.done + REMAINING_CAP + 1))
        return round(100 * self.done / self.total) if self.total else 100


def progress_for_annotator(*, project: Project, annotator: AbstractBaseUser) -> Progress:
    """Items this annotator has done, skipped, and could still be given in this project (counted up to
    REMAINING_CAP). Each count is bounded: the annotator's own rows, and open items walked in the queue's index
    order (item_queue_order) until REMAINING_CAP + 1 are found."""
    done = Annotation.objects.filter(item__project=project, annotator_id=annotator.pk).count()
    skipped = Assignment.objects.filter(
        item__project=project, annotator_id=annotator.pk, status=Assignment.Status.SKIPPED
    ).count()
    finished_by_me = Assignment.objects.filter(
        item=OuterRef("pk"),
        annotator_id=annotator.pk,
        status__in=[Assignment.Status.SUBMITTED, Assignment.Status.SKIPPED],
    )
    annotated_by_me = Annotation.objects.filter(item=OuterRef("pk"), annotator_id=annotator.pk)
    # A bound the index can use: no item wants more than the overlap plus the largest extra a curator asked for.
    most_wanted = project.overlap + (
        Item.objects.filter(project=project, extra_overlap__gt=0).aggregate(most=Max("extra_overlap"))["most"] or 0
    )
    open_for_me = (
        Item.objects.filter(project=project, is_gold=False, annotation_count__lt=most_wanted)
        .filter(annotation_count__lt=F("extra_overlap") + project.overlap)
        .exclude(Exists(finished_by_me))
        .exclude(Exists(annotated_by_me))
        .order_by("annotation_count", "id")
    )
    remaining = open_for_me[: REMAINING_CAP + 1].count()
    return Progress(
        done=done,
        skipped=skipped,
        remaining=min(remaining, REMAINING_CAP),
        remaining_capped=remaining > REMAINING_CAP,
    )


@dataclass(frozen=True)
class ProjectCounts:
    items: int
    complete: int
    annotations: int
    counted_at: float = 0.0  # POSIX seconds

    @property
    def age_s(self) -> float:
        return max(0.0, time.time() - self.counted_at)


# A project with at most this many items is counted, and its review queue recomputed, within the request that needs
# it; a bigger one on a worker, while pages show the last figures with their age.
SMALL_PROJECT_ITEMS = 20_000


def project_is_small(*, project: Project) -> bool:
    """At most SMALL_PROJECT_ITEMS items: one bounded index scan, whatever the size of the project."""
    return (
        not Item.objects.filter(project=project).order_by("pk")[SMALL_PROJECT_ITEMS : SMALL_PROJECT_ITEMS + 1].exists()
    )


# A project's counts are read from the cache (a worker counts them: annotate.services.project_counts) and counted
# again once older than this.
PROJECT_COUNTS_FRESH_S = 60


def project_counts_cache_key(project_id: int) -> str:
    return f"concord:project-counts:{project_id}"


def project_counts_count(*, project: Project) -> ProjectCounts:
    """Count the project's items, complete items and annotations now: a scan of the project."""
    items = Item.objects.filter(project=project)
    return ProjectCounts(
        items=items.count(),
        complete=items.filter(annotation_count__gte=F("extra_overlap") + project.overlap).count(),
        annotations=Annotation.objects.filter(item__project=project).count(),
        counted_at=time.time(),
    )


def project_counts(*, project: Project) -> ProjectCounts | None:
    """The project's counts as last counted (None: never yet); see PROJECT_COUNTS_FRESH_S."""
    cached = cache.get(project_counts_cache_key(project.pk))
    return ProjectCounts(**cached) if cached else None


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
    expected rating counts as right within one point (HelpSteer2's annotators differ by about that much).

    One GROUP BY in the database over the gold items' human annotations (the partial index item_gold, then each
    item's annotations), the ratings compared with jsonb operators: its cost grows with the gold annotations,
    never with the project."""
    user = get_user_model()
    username: str = getattr(user._meta.get_field(user.USERNAME_FIELD), "column", user.USERNAME_FIELD)
    with connection.cursor() as cursor:
        cursor.execute(
            GOLD_SCORES_SQL.format(
                annotation=Annotation._meta.db_table,
                item=Item._meta.db_table,
                gold=GoldAnswer._meta.db_table,
                user=user._meta.db_table,
                username=connection.ops.quote_name(username),
            ),
            {"project": project.pk, "human": Annotation.Origin.HUMAN},
        )
        return [GoldScore(name, *tallies) for name, *tallies in cursor.fetchall()]


# Per annotator: preferences given, of those with the expected sign, expected ratings the annotation gave (a number
# for the same response and attribute), of those within one point.
GOLD_SCORES_SQL = """
SELECT u.{username},
       count(a.strength),
       count(*) FILTER (WHERE sign(a.strength) = g.preference_sign),
       coalesce(sum(r.checked), 0)::int,
       coalesce(sum(r.within), 0)::int
FROM {annotation} a
JOIN {item} i ON i.id = a.item_id
JOIN {gold} g ON g.item_id = a.item_id
JOIN {user} u ON u.id = a.annotator_id
CROSS JOIN LATERAL (
    SELECT count(*) AS checked,
           count(*) FILTER (WHERE abs((a.ratings -> side.key -> expected.key)::text::numeric
                                      - expected.value::text::numeric) <= 1) AS within
    FROM jsonb_each(CASE jsonb_typeof(g.ratings) WHEN 'object' THEN g.ratings ELSE '{{}}' END) AS side
    CROSS JOIN LATERAL jsonb_each(CASE jsonb_typeof(side.value) WHEN 'object' THEN side.value ELSE '{{}}' END)
        AS expected
    WHERE jsonb_typeof(a.ratings -> side.key -> expected.key) = 'number' AND jsonb_typeof(expected.value) = 'number'
) r
WHERE i.project_id = %(project)s AND i.is_gold AND a.origin = %(human)s
GROUP BY u.{username}
ORDER BY u.{username}
"""


def item_annotations(*, item: Item) -> QuerySet[Annotation]:
    return Annotation.objects.filter(item=item).select_related("annotator", "schema").order_by("created_at", "id")


def annotator_is_paused(*, project: Project, annotator: AbstractBaseUser) -> bool:
    return Membership.objects.filter(project=project, user_id=annotator.pk, is_paused=True).exists()


def lease_live(*, project: Project, annotator: AbstractBaseUser, now: datetime | None = None) -> Assignment | None:
    """The annotator's live lease in the project (the oldest, should there be more), with its item; None when
    they hold none. Reading it renews nothing."""
    return (
        Assignment.objects.filter(
            item__project=project,
            annotator_id=annotator.pk,
            status=Assignment.Status.LEASED,
            expires_at__gt=now or timezone.now(),
        )
        .select_related("item__project")
        .order_by("leased_at")
        .first()
    )
