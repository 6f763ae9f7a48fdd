"""Reads for the project list: a card per project with its item counts and progress, in a fixed number of queries
however many projects there are and however big they are.

Small projects (at most SMALL_PROJECT_ITEMS items) are counted live, all of them in one grouped query; whether a
project is small is one bounded index probe per project inside a single query. Big projects show the counts a worker
last cached for their home page (annotate.services.project_counts), read in one cache round trip, with their age.
Agreement and the active model belong to curation and training, which annotate does not import: the page fetches
them from training's project summaries fragment (training.views_project_summaries).
"""

import time
from dataclasses import dataclass

from django.core.cache import cache
from django.db.models import Count, Exists, F, OuterRef, Q, Sum

from .models import Item, Project
from .selectors import (
    PROJECT_COUNTS_FRESH_S,
    SMALL_PROJECT_ITEMS,
    ProjectCounts,
    project_counts_cache_key,
)


@dataclass(frozen=True)
class ProjectCard:
    project: Project
    role: str
    counts: ProjectCounts | None  # None: a big project not counted yet
    live: bool  # counted in this request (a small project), rather than read from the cache

    @property
    def percent(self) -> int:
        if self.counts is None or not self.counts.items:
            return 0
        return round(100 * self.counts.complete / self.counts.items)

    @property
    def stale(self) -> bool:
        """A cached count older than its freshness: the page asks a worker for a new one."""
        return not self.live and (self.counts is None or self.counts.age_s > PROJECT_COUNTS_FRESH_S)


def project_cards(projects: list[tuple[Project, str]]) -> list[ProjectCard]:
    """A card for each (project, role): three queries at most (which projects are big, the small ones' counts) and
    one cache read, whatever the number of projects."""
    if not projects:
        return []
    ids = [project.pk for project, _ in projects]
    beyond_small = Item.objects.filter(project=OuterRef("pk"))[SMALL_PROJECT_ITEMS : SMALL_PROJECT_ITEMS + 1]
    big = set(Project.objects.filter(pk__in=ids).filter(Exists(beyond_small)).values_list("pk", flat=True))
    live = _small_counts([pk for pk in ids if pk not in big])
    cached = cache.get_many([project_counts_cache_key(pk) for pk in big]) if big else {}
    cards = []
    for project, role in projects:
        if project.pk in big:
            found = cached.get(project_counts_cache_key(project.pk))
            cards.append(ProjectCard(project, role, ProjectCounts(**found) if found else None, live=False))
        else:
            cards.append(ProjectCard(project, role, live.get(project.pk, ProjectCounts(0, 0, 0)), live=True))
    return cards


def _small_counts(ids: list[int]) -> dict[int, ProjectCounts]:
    """Items, complete items and annotations of small projects, in one grouped query (an item's annotation_count
    counts its annotations, imported ones too)."""
    if not ids:
        return {}
    rows = (
        Item.objects.filter(project_id__in=ids)
        .order_by()
        .values("project_id")
        .annotate(
            items=Count("id"),
            complete=Count("id", filter=Q(annotation_count__gte=F("extra_overlap") + F("project__overlap"))),
            annotation_total=Sum("annotation_count"),
        )
    )
    now = time.time()
    return {
        row["project_id"]: ProjectCounts(row["items"], row["complete"], row["annotation_total"] or 0, counted_at=now)
        for row in rows
    }
