"""The review queue and the dashboard's item states on a big project: Concord's reads of each item's label summary
columns against aggregating every annotation on each read, in the same run.

Concord keeps what an item's annotations say (counts by side, strength extremes, the widest rating spread) on
the item row, recomputed from the annotations whenever annotations are added (annotate.services.label_summary),
so the queue's filter and severity order (curation.rule_sql, mirroring annotate.rules) read one row per item.
The way before it, and the obvious one: GROUP BY the annotations of every item on each page view, then order by
a severity computed from those aggregates (here without the rating spread, which lives in JSON and the old
queue computed in Python for one page only). The dashboard's item states likewise: one GROUP BY over the items'
columns against reading every annotation and applying annotate.rules.item_state in Python.

The project (built once with COPY and kept between runs): N items, 3 annotations each, a quarter of them split
or spread, ratings on every annotation. Each measurement is the median of interleaved repeats.

    .venv/bin/python bench/review_queue.py --items 100000
"""

import argparse
import hashlib
import json
import random
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import django_setup, machine, percentile, timed, write_section

ANNOTATORS = 3
BATCH = 20_000
REPEATS = 5


def build_project(items: int):  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    from annotate.models import Item, Project

    name = f"bench-review-{items}"
    project, _ = Project.objects.get_or_create(name=name, defaults={"overlap": ANNOTATORS})
    if Item.objects.filter(project=project).count() == items:
        return project
    Item.objects.filter(project=project).delete()
    users = [get_user_model().objects.get_or_create(username=f"bench-reviewer-{i}")[0] for i in range(ANNOTATORS)]
    started = time.perf_counter()
    for start in range(0, items, BATCH):
        _insert_batch(project, users, start, min(items, start + BATCH))
        print(f"  {min(items, start + BATCH)} items ({time.perf_counter() - started:.0f} s)", flush=True)
    return project


def _insert_batch(project, users, start: int, end: int) -> None:  # type: ignore[no-untyped-def]
    """Items [start, end) and their annotations, with COPY, in one transaction."""
    from django.db import connection, transaction
    from django.utils import timezone

    from annotate.models import Annotation, Item

    rng = random.Random(start)
    now = timezone.now()
    item_columns = ("project_id", "prompt", "context", "response_a", "response_b", "source", "external_id")
    item_columns += ("metadata", "content_hash", "annotation_count", "human_count", "is_gold", "extra_overlap")
    item_columns += ("strength_count", "prefer_a_count", "prefer_b_count", "strength_sum", "rating_spread")
    item_columns += ("created_at",)
    with transaction.atomic(), connection.cursor() as cursor:
        with cursor.cursor.copy(f"COPY {Item._meta.db_table} ({', '.join(item_columns)}) FROM STDIN") as copy:
            for n in range(start, end):
                digest = hashlib.sha256(f"{project.pk}:{n}".encode()).hexdigest()
                prompt = json.dumps([{"role": "user", "content": f"Question {n}?"}])
                texts = (prompt, "", f"A {n}", f"B {n}", "bench", str(n), "{}", digest)
                # The summary columns start empty; the refresh computes them, as the migration does.
                copy.write_row((project.pk, *texts, ANNOTATORS, 0, False, 0, 0, 0, 0, 0, 0, now))
        numbers = [str(n) for n in range(start, end)]
        ids = list(Item.objects.filter(project=project, external_id__in=numbers).values_list("id", flat=True))
        columns = ("item_id", "annotator_id", "origin", "strength", "justification", "ratings", "spans", "missing")
        columns += ("corrections", "seconds_spent", "submission_uuid", "created_at", "updated_at")
        with cursor.cursor.copy(f"COPY {Annotation._meta.db_table} ({', '.join(columns)}) FROM STDIN") as copy:
            for item_id in ids:
                for annotator, strength, rating in _labels(rng):
                    ratings = json.dumps({"a": {"helpfulness": rating}, "b": {"helpfulness": 4 - rating}})
                    row = (item_id, users[annotator].pk, "human", strength, "", ratings, "[]", "[]", "{}", 10.0)
                    copy.write_row((*row, str(uuid.uuid4()), now, now))


def _labels(rng: random.Random) -> list[tuple[int, int, int]]:
    """Three annotators' (index, strength, helpfulness): mostly agreeing, a quarter split or spread."""
    side = rng.choice([-1, 1])
    if rng.random() < 0.25:
        strengths = [side * 3, -side, side * rng.randint(0, 2)]
    else:
        strengths = [side * rng.randint(1, 3) for _ in range(ANNOTATORS)]
    return [(i, s, 2 + rng.choice([-1, 0, 1])) for i, s in enumerate(strengths)]


def aggregate_queue_page(project) -> list[int]:  # type: ignore[no-untyped-def]
    """The queue aggregated from the annotations on each read (the way before label summaries): count and first
    page of the disputed items, ordered by a severity computed from the aggregates."""
    from django.db.models import Count, F, FloatField, IntegerField, Max, Min, Q, Value
    from django.db.models.expressions import Case, ExpressionWrapper, When
    from django.db.models.functions import Cast, Greatest, Least

    from annotate.models import Item

    as_float: FloatField = FloatField()
    rows = (
        Item.objects.filter(project=project, is_gold=False, annotation_count__gte=project.overlap)
        .annotate(
            n=Count("annotations", filter=Q(annotations__strength__isnull=False)),
            positive=Count("annotations", filter=Q(annotations__strength__gt=0)),
            negative=Count("annotations", filter=Q(annotations__strength__lt=0)),
            low=Min("annotations__strength"),
            high=Max("annotations__strength"),
        )
        .annotate(spread=ExpressionWrapper(F("high") - F("low"), output_field=IntegerField()))
        .filter(Q(positive__gt=0, negative__gt=0) | Q(spread__gt=2))
        .annotate(
            severity=(
                Case(
                    When(
                        positive__gt=0,
                        negative__gt=0,
                        then=Value(2.0)
                        + Value(2.0)
                        * Cast(Least("positive", "negative"), as_float)
                        / Cast(Greatest("positive", "negative"), as_float),
                    ),
                    default=Value(0.0),
                    output_field=as_float,
                )
                + Case(When(spread__gt=2, then=Cast(F("spread") - 2, as_float)), default=Value(0.0))
            )
            * Cast("n", as_float)
            / (Cast("n", as_float) + Value(1.0))
        )
        .order_by("-severity", "-n", "id")
        .values_list("id", flat=True)
    )
    rows.count()
    return list(rows[:50])


def summary_queue_page(project) -> list[int]:  # type: ignore[no-untyped-def]
    from curation.selectors_review import review_queue_page

    _, entries = review_queue_page(project=project)
    return [entry.item.pk for entry in entries]


def per_view_queue_page(project) -> list[int]:  # type: ignore[no-untyped-def]
    """The queue as Concord read it before its review columns: every item judged by curation.rule_sql over its
    label summary columns on each view, then counted, ordered and cut to a page."""
    from django.db.models import Q

    from annotate.models import Item
    from curation.services.review_state import _review_values

    judged = _review_values(Item.objects.filter(project=project, is_gold=False), project, None, Q())
    queue = judged.filter(new_severity__isnull=False).order_by("-new_severity", "-annotation_count", "id")
    ids = queue.values_list("id", flat=True)
    ids.count()
    return list(ids[:50])


def one_item_refreshes(project, count: int = 200) -> list[float]:  # type: ignore[no-untyped-def]
    """What a submit adds: one item's review columns recomputed (annotate.rules in Python), one at a time."""
    from django.db import transaction

    from annotate.models import Item
    from curation.services.review_state import items_review_refresh

    ids = list(Item.objects.filter(project=project).order_by("?").values_list("id", flat=True)[:count])
    times = []
    for item_id in ids:
        with transaction.atomic():
            times.append(timed(lambda item_id=item_id: items_review_refresh(project_id=project.pk, item_ids=[item_id])))
    return times


def python_states(project) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Every annotation read, each item's state by annotate.rules in Python."""
    from collections import Counter

    from annotate.models import Annotation, Item
    from annotate.rules import item_state, label_summary

    labels: dict[int, list[tuple[str, int | None, object]]] = {}
    rows = Annotation.objects.filter(item__project=project).values_list("item_id", "origin", "strength", "ratings")
    for item_id, origin, strength, ratings in rows.iterator(chunk_size=10_000):
        labels.setdefault(item_id, []).append((origin, strength, ratings))
    counts: Counter[str] = Counter()
    items = Item.objects.filter(project=project, is_gold=False).values_list("id", "extra_overlap")
    for item_id, extra in items.iterator(chunk_size=10_000):
        counts[item_state(label_summary(labels.get(item_id, []), wanted=project.overlap + extra), None)] += 1
    return dict(counts)


def sql_states(project) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from curation.selectors_quality import item_states

    return {state: count for state, count in item_states(project=project).items() if count}


def median_of(fn) -> float:  # type: ignore[no-untyped-def]
    return statistics.median(timed(fn) for _ in range(REPEATS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    django_setup()
    from django.db import connection

    from annotate.services.label_summary import project_label_summaries_refresh

    project = build_project(args.items)
    # Every item's summary from its annotations, as the migration computes them (idempotent: timed every run).
    refresh = timed(lambda: project_label_summaries_refresh(project_id=project.pk))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")  # the refresh rewrote every item row: measure a settled table
    # The two ways must agree before their times mean anything.
    assert sql_states(project) == python_states(project), (sql_states(project), python_states(project))
    from annotate.models import Project
    from curation.services.review_state import review_queue_sync

    Project.objects.filter(pk=project.pk).update(review_key="")
    project.refresh_from_db()
    rebuild = timed(lambda: review_queue_sync(project=project, model=None))
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE annotate_item")
    assert summary_queue_page(project) == per_view_queue_page(project)
    queue, per_view, aggregate, states, python = [], [], [], [], []
    for _ in range(REPEATS):
        queue.append(timed(lambda: summary_queue_page(project)))
        per_view.append(timed(lambda: per_view_queue_page(project)))
        aggregate.append(timed(lambda: aggregate_queue_page(project)))
        states.append(timed(lambda: sql_states(project)))
        python.append(timed(lambda: python_states(project)))
    q, v, a, s, p = (statistics.median(t) for t in (queue, per_view, aggregate, states, python))
    one = one_item_refreshes(project)
    counts = sql_states(project)
    lines = [
        f"A project of {args.items:,} items with 3 annotations each ({3 * args.items:,} annotations; "
        f"{counts.get('disputed', 0):,} disputed), PostgreSQL on the same machine ({machine()}); medians of "
        f"{REPEATS} interleaved repeats.",
        "",
        "| read | Concord | the naive way, same run | ratio |",
        "| --- | --- | --- | --- |",
        f"| review queue: count, first page of 50 and its entries (review columns, index item_review_order) | "
        f"{q * 1000:.0f} ms | {v * 1000:.0f} ms judging every item's summary columns per view (the queue before "
        f"its review columns) | {v / q:.1f}x |",
        f"| review queue: count and first page of 50 | {q * 1000:.0f} ms | {a * 1000:.0f} ms aggregating the "
        f"annotations per view | {a / q:.1f}x |",
        f"| dashboard: items by state (label summary columns) | {s * 1000:.0f} ms | {p * 1000:.0f} ms (rules in "
        f"Python) | {p / s:.1f}x |",
        "",
        "Concord's queue does more than the aggregate one: it includes the rating spread, open flags and "
        "curator decisions in its filter and order, which the aggregate query leaves out.",
        "",
        f"Keeping the review columns: a submit's refresh of its item (annotate.rules in Python) p50 "
        f"{1000 * statistics.median(one):.1f} ms, p95 {1000 * percentile(one, 0.95):.1f} ms over {len(one)} items; "
        f"recomputing every item (curation.rule_sql, in chunks of 20,000: what a new queue model or rules version "
        f"costs, on a worker) {rebuild:.1f} s.",
    ]
    lines += ["", f"Computing every item's summary from its annotations (as the migration does): {refresh:.1f} s."]
    lines += ["", f"Command: `.venv/bin/python bench/review_queue.py --items {args.items}`"]
    print("\n".join(lines))
    if not args.no_write:
        write_section("Review queue and item states on a big project", "\n".join(lines))


if __name__ == "__main__":
    main()
