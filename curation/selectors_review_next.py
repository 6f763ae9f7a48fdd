"""Moving through the review queue from the adjudication page: the filters a curator came with, and the item that
follows one in the queue's order under them.

The queue is ordered by (-review_severity, -annotation_count, id) on the partial index item_review_order; the
next item after a position is found by up to three range reads on that index, never by counting or offsetting,
so it stays as fast on a project of a million items as the queue page itself.
"""

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import QueryDict

from annotate.models import Item, Project
from curation.selectors_review import MODEL_REASONS, REASONS, ModelScores, disagreement_queue


@dataclass(frozen=True)
class QueueFilters:
    """The review queue's filters and page, carried from the queue to the adjudication page and on."""

    reason: str = ""
    source: str = ""
    page: str = ""

    @classmethod
    def from_query(cls, query: QueryDict) -> "QueueFilters":
        reason = query.get("reason", "")
        page = query.get("page", "")
        return cls(
            reason=reason if reason in REASONS else "",
            source=query.get("source", "")[:200],
            page=page if page.isdigit() and page != "1" else "",
        )

    @property
    def needs_model(self) -> bool:
        return self.reason in MODEL_REASONS

    def query(self, **extra: Any) -> str:
        """As a query string (without "?"), with only the filters set, and `extra` added."""
        given = {"reason": self.reason, "source": self.source, "page": self.page, **extra}
        return urlencode({key: value for key, value in given.items() if value not in ("", None)})


@dataclass(frozen=True)
class QueuePosition:
    """Where an item sits in the queue's order (its severity is None when it is not in the queue)."""

    severity: float | None
    annotations: int
    item_id: int

    @classmethod
    def of(cls, item: Item) -> "QueuePosition":
        return cls(item.review_severity, item.annotation_count, item.pk)


def review_queue_next(
    *, project: Project, after: QueuePosition, filters: QueueFilters, model: ModelScores | None = None
) -> int | None:
    """The id of the item that follows `after` in the queue under `filters` (the queue's first item when `after`
    is not in it), or None at the end of the queue."""
    queue = disagreement_queue(project=project, reason=filters.reason, source=filters.source, model=model)
    queue = queue.exclude(pk=after.item_id)
    if after.severity is None:
        stages: list[QuerySet[Item, Any]] = [queue]
    else:
        # The three parts of "after" in the order (-severity, -annotations, id), each a range of the index.
        stages = [
            queue.filter(review_severity=after.severity, annotation_count=after.annotations, id__gt=after.item_id),
            queue.filter(review_severity=after.severity, annotation_count__lt=after.annotations),
            queue.filter(review_severity__lt=after.severity),
        ]
    for stage in stages:
        found = stage.values_list("id", flat=True).first()
        if found is not None:
            return int(found)
    return None


def project_item_named(*, project: Project, value: str) -> Item | None:
    """The item of `project` whose id is `value` (its id and number only; one index probe), else None: what a
    query string names."""
    if not value.isdigit() or len(value) > 18:
        return None
    return Item.objects.filter(project=project, pk=int(value)).only("id", "number").first()
