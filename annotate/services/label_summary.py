"""The label summary columns of Item (annotate.rules.LabelSummary), recomputed from the annotations themselves.

Every path that adds annotations calls item_label_summaries_refresh in the same transaction: annotation_submit
for one item under its row lock, the import writer for a batch's items after locking them. The columns are
always recomputed from the stored annotations, never incremented, so a refresh repairs whatever it touches.
The SQL mirrors annotate.rules.label_summary; tests/annotate/test_label_summary.py checks that the two agree.
"""

from collections.abc import Iterable

from django.db import connection, transaction
from django.db.models import Count, OuterRef, Subquery
from django.db.models.functions import Coalesce

from annotate.models import Annotation, Item
from annotate.signals import items_changed

# Items per UPDATE when every item of a project is refreshed.
REFRESH_CHUNK = 5000

_REFRESH_SQL = """
UPDATE {item} AS item SET
    human_count = facts.human,
    strength_count = facts.strengths,
    prefer_a_count = facts.prefer_a,
    prefer_b_count = facts.prefer_b,
    strength_min = facts.low,
    strength_max = facts.high,
    strength_sum = facts.total,
    rating_spread = spread.widest
FROM unnest(%s::bigint[]) AS target(id)
CROSS JOIN LATERAL (
    SELECT count(*) FILTER (WHERE a.origin = 'human') AS human,
           count(a.strength) AS strengths,
           count(*) FILTER (WHERE a.strength < 0) AS prefer_a,
           count(*) FILTER (WHERE a.strength > 0) AS prefer_b,
           min(a.strength) AS low,
           max(a.strength) AS high,
           coalesce(sum(a.strength), 0) AS total
    FROM {annotation} AS a WHERE a.item_id = target.id
) AS facts
CROSS JOIN LATERAL (
    -- The widest max - min of one attribute of one response; whole numbers only, as annotate.rules has it.
    SELECT coalesce(max(per_attribute.high - per_attribute.low), 0) AS widest
    FROM (
        SELECT max(value.number) AS high, min(value.number) AS low
        FROM {annotation} AS a
        CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(a.ratings) = 'object' THEN a.ratings
                                           ELSE '{{}}'::jsonb END) AS side(name, given)
        CROSS JOIN LATERAL jsonb_each(CASE WHEN jsonb_typeof(side.given) = 'object' THEN side.given
                                           ELSE '{{}}'::jsonb END) AS attribute(name, raw)
        -- A whole number written as one (as Python's int: 2.0 and "2" are not); the CASE casts nothing else.
        CROSS JOIN LATERAL (
            SELECT CASE WHEN jsonb_typeof(attribute.raw) = 'number' AND (attribute.raw #>> '{{}}') ~ '^-?[0-9]+$'
                        THEN (attribute.raw #>> '{{}}')::numeric END AS number
        ) AS value
        WHERE a.item_id = target.id AND value.number IS NOT NULL
        GROUP BY side.name, attribute.name
    ) AS per_attribute
) AS spread
WHERE item.id = target.id
"""


def item_label_summaries_refresh(*, item_ids: Iterable[int]) -> None:
    """Recompute the label summary of these items from their annotations, in one statement.

    Call it in the transaction that changed their annotations, holding their row locks: a concurrent writer's
    refresh of the same item then waits for this transaction, and its statement, started after the commit,
    sees these annotations too."""
    ids = sorted(set(item_ids))
    if not ids:
        return
    sql = _REFRESH_SQL.format(item=Item._meta.db_table, annotation=Annotation._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql, [ids])
    items_changed_send(item_ids=ids)


def items_changed_send(*, item_ids: list[int]) -> None:
    """Tell the apps built on annotate (annotate.signals.items_changed) that these items changed, project by
    project."""
    by_project: dict[int, list[int]] = {}
    for item_id, project_id in Item.objects.filter(pk__in=item_ids).order_by("pk").values_list("pk", "project_id"):
        by_project.setdefault(project_id, []).append(item_id)
    for project_id, ids in by_project.items():
        items_changed.send(sender=Item, project_id=project_id, item_ids=ids)


def items_lock(*, item_ids: Iterable[int]) -> None:
    """Take the row locks of these items in id order, inside a transaction: two writers locking the same items
    this way take them in the same order, so they wait for each other rather than deadlock."""
    ids = sorted(set(item_ids))
    list(Item.objects.filter(pk__in=ids).order_by("pk").select_for_update().values_list("pk", flat=True))


@transaction.atomic
def items_labels_repair(*, item_ids: Iterable[int]) -> None:
    """Count these items' annotations again (annotation_count) and recompute their summaries, under their locks:
    for a write that went around the services (the admin site, a script) and for repairs."""
    ids = sorted(set(item_ids))
    items_lock(item_ids=ids)
    counted = Annotation.objects.filter(item_id=OuterRef("pk")).order_by().values("item_id").annotate(n=Count("pk"))
    Item.objects.filter(pk__in=ids).update(annotation_count=Coalesce(Subquery(counted.values("n")), 0))
    item_label_summaries_refresh(item_ids=ids)


def project_label_summaries_refresh(*, project_id: int, chunk_size: int = REFRESH_CHUNK) -> int:
    """items_labels_repair for every item of a project, a chunk at a time (each chunk one transaction); returns
    how many items were repaired. The write paths keep the columns; this is for repairs
    (`manage.py repair_label_summaries`)."""
    ids = list(Item.objects.filter(project_id=project_id).order_by("pk").values_list("pk", flat=True))
    for start in range(0, len(ids), chunk_size):
        items_labels_repair(item_ids=ids[start : start + chunk_size])
    return len(ids)
