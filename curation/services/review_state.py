"""The review queue's columns on each item (Item.review_severity, review_reasons, model_probability_b), kept in step
with everything the queue's rules read, so that the queue reads an index rather than judging every item per view.

- An item's labels or gold flag change: annotate sends items_changed inside the writing transaction, holding the
  items' row locks; items_review_refresh recomputes their columns in the same transaction.
- A curator decides or flags: curation.services.adjudication calls items_review_refresh.
- The model the queue weighs annotators against, its threshold, the project's overlap or the rules change: the
  project's review_key no longer matches, and project_review_rebuild recomputes every item (training's
  review_queue_sync decides when, with the model's scores).

A few items at a time (a submit, a decision) are judged by annotate.rules in Python, holding their row locks; a
whole project by curation.rule_sql, the rules' SQL mirror, inlined into one UPDATE per chunk of ids over the item's
own row, holding the chunk's row locks. Every writer of what the rules read (a submit, an import, a decision, a
flag, a gold answer) holds the item's row lock while it writes and refreshes, so the two never cross.
"""

from collections.abc import Iterable
from typing import Any

from django.db import connection, transaction
from django.db.models import Case, F, FloatField, Q, QuerySet, Value, When
from django.db.models.sql import UpdateQuery

from annotate import rules
from annotate.models import REVIEW_REASON_BITS, Item, Project
from annotate.selectors import item_label_summary
from curation import rule_sql
from curation.models import Adjudication, ItemFlag
from curation.selectors_review import SUMMARY_FIELDS, ModelScores

# Changing the review rules (annotate.rules, curation.rule_sql) changes this, so every project's columns are
# recomputed on the next look at its queue.
REVIEW_RULES_VERSION = "1"
# Items per UPDATE when a whole project is recomputed: each chunk is its own short transaction, so annotators'
# submits wait on a chunk's row locks for a moment at most.
REBUILD_CHUNK = 20_000


def review_key(model: ModelScores | None) -> str:
    """What a project's review columns are computed for: the rules' version, and the queue model, its threshold
    and the scoring that wrote its scores."""
    if model is None:
        return f"{REVIEW_RULES_VERSION}|none"
    return f"{REVIEW_RULES_VERSION}|{model.reason}|{model.threshold}|{model.key}"[:200]


def review_is_current(*, project: Project, model: ModelScores | None) -> bool:
    return Project.objects.filter(pk=project.pk, review_key=review_key(model)).exists()


def review_queue_sync(*, project: Project, model: ModelScores | None) -> int:
    """Recompute the project's review columns for this queue model unless they are already for it; returns how
    many items changed."""
    if review_is_current(project=project, model=model):
        return 0
    return project_review_rebuild(
        project=project,
        key=review_key(model),
        probabilities=model.scores if model is not None else None,
        threshold=model.threshold if model is not None else None,
    )


def _review_values(items: QuerySet[Item], project: Project, threshold: float | None, within: Q) -> QuerySet[Item]:
    """The items annotated with `new_severity` (NULL out of the queue) and `new_reasons` (REVIEW_REASON_BITS),
    computed from their columns by curation.rule_sql; `within`, a condition on item_id that holds for every one of
    them, keeps the decision and flag sets as small as the items."""
    contradicts = rule_sql.model_contradicts_q(threshold) if threshold is not None else Q(pk__in=[])
    reasons = sum(
        (
            Case(When(rule_sql.REASON_Q[code], then=Value(REVIEW_REASON_BITS[code])), default=Value(0))
            for code in rule_sql.REASON_Q
        ),
        Value(0),
    )
    return (
        items.annotate(
            spread=rule_sql.strength_spread(),
            open_flag=rule_sql.boolean(Q(pk__in=rule_sql.open_flag_ids(project, within))),
            state=rule_sql.item_state(project, within),
            model_p_b=F("model_probability_b"),
        )
        .annotate(model_contradicts=rule_sql.boolean(contradicts))
        .annotate(severity=rule_sql.severity())
        .annotate(
            new_severity=Case(
                When(is_gold=True, then=Value(None)),
                When(rule_sql.in_queue_q(), then=F("severity")),
                default=Value(None),
                output_field=FloatField(),
            ),
            new_reasons=reasons,
        )
    )


def _refresh(items: QuerySet[Item], project: Project, within: Q) -> int:
    """Recompute the items' review columns by curation.rule_sql in one UPDATE; returns how many rows it wrote."""
    # Rows whose columns may change: in the queue before or after, or with other reasons. (Most items are in
    # neither, and are left unwritten.)
    changed = _review_values(items, project, project.review_model_threshold, within).filter(
        Q(review_severity__isnull=False) | Q(new_severity__isnull=False) | ~Q(review_reasons=F("new_reasons"))
    )
    # QuerySet.update drops annotations, which the new values name: the UPDATE is compiled from the query itself.
    query = changed.query.chain(UpdateQuery)
    query.add_update_values({"review_severity": F("new_severity"), "review_reasons": F("new_reasons")})  # type: ignore[attr-defined]
    sql, params = query.get_compiler(changed.db).as_sql()
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.rowcount


def items_review_refresh(*, project_id: int, item_ids: Iterable[int]) -> None:
    """Recompute these items' review columns; call it in the transaction that changed what the rules read, holding
    their row locks (a submit holds its item's).

    A few items (a submit, a decision, an import's chunk) are judged by annotate.rules itself, in Python, over
    three small reads: compiling the SQL mirror's expressions and planning them would cost a submit more than
    the judging does. tests/curation/test_review_state.py checks that both ways give the same columns."""
    ids = sorted(set(item_ids))
    if not ids:
        return
    # The project as it is now: the overlap and the queue model's threshold the rules read.
    project = Project.objects.only("id", "overlap", "review_model_threshold").get(pk=project_id)
    rows = Item.objects.filter(project=project, pk__in=ids).values(
        "id", "is_gold", "model_probability_b", "review_severity", "review_reasons", *SUMMARY_FIELDS
    )
    latest = (
        Adjudication.objects.filter(item_id__in=ids)
        .order_by("item_id", "-created_at", "-id")
        .distinct("item_id")
        .values_list("item_id", "decision")
    )
    decisions = dict(latest)
    flagged = set(ItemFlag.objects.filter(item_id__in=ids, resolved=False).values_list("item_id", flat=True))
    changed = []
    for row in rows:
        severity, reasons = _judged(row, project, decisions.get(row["id"]), open_flag=row["id"] in flagged)
        if (severity, reasons) != (row["review_severity"], row["review_reasons"]):
            changed.append(Item(pk=row["id"], review_severity=severity, review_reasons=reasons))
    Item.objects.bulk_update(changed, ["review_severity", "review_reasons"])


def _judged(
    row: dict[str, Any], project: Project, decision: str | None, *, open_flag: bool
) -> tuple[float | None, int]:
    """An item's review severity (None: not in the queue) and reason bits, by annotate.rules."""
    summary = item_label_summary(row, overlap=project.overlap)
    threshold = project.review_model_threshold
    contradicts = threshold is not None and rules.model_contradicts(summary, row["model_probability_b"], threshold)
    found = rules.reasons(summary, open_flag=open_flag, model_contradicts=contradicts)
    bits = sum(REVIEW_REASON_BITS[reason.code] for reason in found)
    queued = not row["is_gold"] and rules.in_review_queue(
        summary, decision, open_flag=open_flag, model_contradicts=contradicts
    )
    return (rules.severity(summary, found) if queued else None), bits


def on_items_changed(sender: Any, *, project_id: int, item_ids: list[int], **kwargs: Any) -> None:
    """annotate.signals.items_changed: their labels or gold flag changed."""
    items_review_refresh(project_id=project_id, item_ids=item_ids)


def project_review_rebuild(
    *,
    project: Project,
    key: str,
    probabilities: QuerySet[Any] | None,
    threshold: float | None,
    chunk_size: int = REBUILD_CHUNK,
) -> int:
    """Recompute every item's review columns for the queue model whose scores (rows of item_id and probability_b)
    and threshold are given (None: no model), then record `key` (review_key) as what they hold. Returns how many
    items changed. A chunk of ids at a time, each in its own transaction."""
    Project.objects.filter(pk=project.pk).update(review_model_threshold=threshold)
    project.review_model_threshold = threshold
    ids = Item.objects.filter(project=project).order_by("pk").values_list("pk", flat=True)
    changed = 0
    low = ids.first()
    while low is not None:
        high = next(iter(ids.filter(pk__gte=low)[chunk_size : chunk_size + 1]), None)
        chunk = Item.objects.filter(project=project, pk__gte=low)
        within = Q(item_id__gte=low)
        if high is not None:
            chunk = chunk.filter(pk__lt=high)
            within &= Q(item_id__lt=high)
        with transaction.atomic():
            # The chunk's row locks first, in id order as every writer takes them: a writer of what the rules read
            # finishes before the statement below starts (which then sees its work), or waits for this chunk.
            list(chunk.order_by("pk").select_for_update().values_list("pk", flat=True))
            _set_probabilities(chunk, probabilities)
            changed += _refresh(chunk, project, within)
        low = high
    Project.objects.filter(pk=project.pk).update(review_key=key)
    project.review_key = key
    return changed


_PROBABILITIES_SQL = """
UPDATE {item} AS item SET model_probability_b = score.probability_b
FROM ({chunk}) AS target(id)
LEFT JOIN ({scores}) AS score(item_id, probability_b) ON score.item_id = target.id
WHERE item.id = target.id AND item.model_probability_b IS DISTINCT FROM score.probability_b
"""


def _set_probabilities(chunk: QuerySet[Item], probabilities: QuerySet[Any] | None) -> None:
    """The queue model's probability that B wins, copied onto the chunk's items (NULL where it has no score)."""
    if probabilities is None:
        chunk.exclude(model_probability_b=None).update(model_probability_b=None)
        return
    scores = probabilities.filter(item_id__in=chunk.values("pk")).values_list("item_id", "probability_b")
    sql, params = scores.query.sql_with_params()
    table = Item._meta.db_table
    chunk_sql, chunk_params = chunk.values_list("pk", flat=True).query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(_PROBABILITIES_SQL.format(item=table, chunk=chunk_sql, scores=sql), [*chunk_params, *params])
