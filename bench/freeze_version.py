"""Freezing a large dataset version: Concord's freeze (the service a worker runs) against a naive ORM loop, in the
same run.

The project is built once with COPY in a benchmark database of its own and kept between runs (a second run with
the same --items reuses it): N items, three annotations each from a pool of a hundred annotators (HelpSteer2's
five ratings per response, an error span on one annotation in ten, missing information on one in twenty), a
quarter of the items split or spread over more than 2, one in twenty labelled only by an import, and a curator's
decision on one in fifty. Each item's label summary columns are computed by annotate.rules.label_summary as the
rows are written, as the services keep them.

Concord's freeze (curation.tasks.dataset_version_freeze_run -> curation.services.versions) picks the qualifying
items in SQL (curation.rule_sql), reads them a chunk of ids at a time with their annotations aggregated into JSON,
makes each row in Python and writes the rows with COPY. The naive way is the ORM loop: every item with its
annotations as model instances, annotate.rules applied, the same row made, and a DatasetRow saved one at a time;
it runs on the first --sample items (rolled back) and its rate is extrapolated.

    .venv/bin/python bench/freeze_version.py --items 100000
"""

import argparse
import hashlib
import json
import os
import random
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import django_setup, filler_text, machine, write_section

DATABASE = "concord_bench_freeze"
ANNOTATORS = 100
OVERLAP = 3
BATCH = 20_000
# Measured in the same session with the code before issue 11 (commit 369411a), which read each chunk of items with
# an ORM prefetch of their annotations and wrote rows with bulk_create, then read them all back to hash them.
BEFORE = (
    "Before (commit 369411a: an ORM prefetch per chunk of items, bulk_create, the rows read back to be hashed), "
    "the 100,000-item project froze 72,705 rows in 111 s: 654 rows/s (load average 3.9); the same rows and the "
    "same content hash as now."
)
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")


def build_project(items: int):  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    from annotate.labels import DEFAULT_SCHEMA
    from annotate.models import Item, LabelSchema, Project

    name = f"bench-freeze-{items}"
    project = Project.objects.filter(name=name).first()
    if project is not None and Item.objects.filter(project=project).count() == items:
        return project
    # One benchmark project at a time, so the database stays as small as it can.
    from curation.models import DatasetVersion

    DatasetVersion.objects.filter(name__startswith="bench-freeze").delete()
    Project.objects.filter(name__startswith="bench-freeze-").delete()
    project = Project.objects.create(name=name, overlap=OVERLAP)
    schema = LabelSchema.objects.create(project=project, version=1, definition=DEFAULT_SCHEMA)
    users = [get_user_model().objects.get_or_create(username=f"bench-annotator-{i}")[0] for i in range(ANNOTATORS)]
    users.append(get_user_model().objects.get_or_create(username="bench-imported")[0])
    started = time.perf_counter()
    for start in range(0, items, BATCH):
        _insert_batch(project, schema.pk, [u.pk for u in users], start, min(items, start + BATCH))
        print(f"  {min(items, start + BATCH):,} items ({time.perf_counter() - started:.0f} s)", flush=True)
    with_connection_analyze()
    return project


def with_connection_analyze() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


def _defaults(model, given: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[Any, ...]]:  # type: ignore[no-untyped-def]
    """The model's other NOT NULL columns and their Python defaults, so COPY fills them as the ORM would (the
    database has no defaults of its own)."""
    names, values = [], []
    for field in model._meta.concrete_fields:
        if field.primary_key or field.null or field.column in given:
            continue
        value = field.get_default()
        names.append(field.column)
        values.append(json.dumps(value) if isinstance(value, dict | list) else value)
    return tuple(names), tuple(values)


def _insert_batch(project, schema_id: int, users: list[int], start: int, end: int) -> None:  # type: ignore[no-untyped-def]
    """Items [start, end), their annotations and decisions, with COPY, in one transaction."""
    from django.db import connection, transaction
    from django.utils import timezone

    from annotate.models import Annotation, Item
    from annotate.rules import label_summary
    from curation.models import Adjudication

    rng = random.Random(start)
    now = timezone.now()
    planned = [_item_labels(rng, users) for _ in range(start, end)]
    item_columns: tuple[str, ...] = (
        "project_id",
        "prompt",
        "context",
        "response_a",
        "response_b",
        "source",
        "external_id",
    )
    item_columns += ("metadata", "content_hash", "annotation_count", "human_count", "is_gold", "extra_overlap")
    item_columns += ("priority", "strength_count", "prefer_a_count", "prefer_b_count", "strength_min")
    item_columns += ("strength_max", "strength_sum", "rating_spread", "created_at")
    more, item_defaults = _defaults(Item, item_columns)
    item_columns += more
    with transaction.atomic(), connection.cursor() as cursor:
        last = Item.objects.order_by("-id").values_list("id", flat=True).first() or 0
        with cursor.cursor.copy(f"COPY {Item._meta.db_table} ({', '.join(item_columns)}) FROM STDIN") as copy:
            for n, labels in zip(range(start, end), planned, strict=True):
                digest = hashlib.sha256(f"{project.pk}:{n}".encode()).hexdigest()
                prompt = json.dumps([{"role": "user", "content": f"Question {n}: " + filler_text(rng, 25)}])
                response_a = filler_text(rng, 40) + "\n\n" + filler_text(rng, 30)
                response_b = filler_text(rng, 35) + "\n" + filler_text(rng, 30)
                imported = labels[0][1] == "imported"
                metadata = json.dumps({"imported_labels": {"bench-imported": {"scale": "seven"}}} if imported else {})
                s = label_summary([(origin, strength, ratings) for _, origin, strength, ratings, _ in labels], wanted=3)
                summary = (s.strengths, s.prefer_a, s.prefer_b, s.strength_min, s.strength_max, s.strength_sum)
                texts = (prompt, "", response_a, response_b, "bench", str(n), metadata, digest)
                counts = (s.annotations, s.human, False, 0, 0)
                copy.write_row((project.pk, *texts, *counts, *summary, s.rating_spread, now, *item_defaults))
        ids = dict(Item.objects.filter(project=project, id__gt=last).values_list("external_id", "id"))
        columns: tuple[str, ...] = (
            "item_id",
            "annotator_id",
            "schema_id",
            "origin",
            "strength",
            "justification",
            "ratings",
            "spans",
        )
        columns += ("missing", "corrections", "seconds_spent", "submission_uuid", "created_at", "updated_at")
        more, annotation_defaults = _defaults(Annotation, columns)
        columns += more
        decisions = []
        with cursor.cursor.copy(f"COPY {Annotation._meta.db_table} ({', '.join(columns)}) FROM STDIN") as copy:
            for n, labels in zip(range(start, end), planned, strict=True):
                item_id = ids[str(n)]
                for annotator, origin, strength, ratings, spans in labels:
                    missing = [{"response": "b", "category": "missing_major"}] if rng.random() < 0.05 else []
                    row: tuple[Any, ...] = (item_id, annotator, schema_id if origin == "human" else None, origin)
                    row += (strength, "Fine.")
                    row += (json.dumps(ratings), json.dumps(spans), json.dumps(missing), "{}", 12.5)
                    copy.write_row((*row, str(uuid.uuid4()), now, now, *annotation_defaults))
                if rng.random() < 0.02:
                    decisions.append(
                        (item_id, users[0], rng.choice(["label", "label", "exclude"]), rng.choice([-2, 3]))
                    )
        columns = ("item_id", "curator_id", "decision", "strength", "ratings", "reason", "created_at")
        more, decision_defaults = _defaults(Adjudication, columns)
        columns += more
        with cursor.cursor.copy(f"COPY {Adjudication._meta.db_table} ({', '.join(columns)}) FROM STDIN") as copy:
            for item_id, curator, decision, strength in decisions:
                copy.write_row(
                    (
                        item_id,
                        curator,
                        decision,
                        strength if decision == "label" else None,
                        "{}",
                        "Bench.",
                        now,
                        *decision_defaults,
                    )
                )


def _item_labels(rng: random.Random, users: list[int]) -> list[tuple[int, str, int, dict[str, Any], list[Any]]]:
    """An item's annotations (annotator, origin, strength, ratings, spans): three people mostly agreeing, a quarter
    split or spread; one item in twenty labelled by an import only."""
    side = rng.choice([-1, 1])
    if rng.random() < 0.05:
        return [(users[-1], "imported", side * rng.randint(1, 3), {}, [])]
    if rng.random() < 0.25:
        strengths = [side * 3, -side, side * rng.randint(0, 2)]
    else:
        strengths = [side * rng.randint(1, 3) for _ in range(OVERLAP)]
    annotators = rng.sample(users[:-1], OVERLAP)
    # Ratings within 1 of the item's own, so within 2 of each other; one item in twenty has one rated 3 apart.
    base = {side_: {name: rng.randint(1, 3) for name in ATTRIBUTES} for side_ in "ab"}
    rating_dispute = rng.random() < 0.05
    labels = []
    for n, (annotator, strength) in enumerate(zip(annotators, strengths, strict=True)):
        ratings = {
            side_: {name: min(4, max(0, value + rng.choice([-1, 0, 0, 1]))) for name, value in values.items()}
            for side_, values in base.items()
        }
        if rating_dispute:
            ratings["a"]["helpfulness"] = 4 if n == 0 else 0
        spans = []
        if rng.random() < 0.1:
            spans = [{"response": "a", "start": 0, "end": 9, "category": "irrelevant", "text": "the model"}]
        labels.append((annotator, "human", strength, ratings, spans))
    return labels


def fresh_draft(project, name: str):  # type: ignore[no-untyped-def]
    from curation.services.versions import dataset_version_create

    return dataset_version_create(name=name, projects=[project], filters={}, created_by=None)


def service_freeze(project) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The worker's task, run in this process: its wall clock, the CPU of this process (the thread that reads
    ahead included) and the machine's load average meanwhile."""
    from curation.models import DatasetVersion
    from curation.tasks import dataset_version_freeze_run

    DatasetVersion.objects.filter(name__startswith="bench-freeze").delete()
    draft = fresh_draft(project, "bench-freeze-service")
    cpu, started = time.process_time(), time.perf_counter()
    dataset_version_freeze_run(draft.pk)
    seconds = time.perf_counter() - started
    version = DatasetVersion.objects.get(pk=draft.pk)
    assert version.status == "frozen", version.error
    assert version.content_hash == _readback_hash(version)
    figures = {"rows": version.row_count, "seconds": seconds, "cpu": time.process_time() - cpu}
    return figures | {"load": os.getloadavg()[0], "hash": version.content_hash}


def _readback_hash(version) -> str:  # type: ignore[no-untyped-def]
    """The hash of the stored rows, read back (not timed): the one the freeze computed as it wrote them."""
    from curation.services.versions import dataset_version_content_hash

    return dataset_version_content_hash(version=version)


def naive_freeze(project, sample: int) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """The ORM loop on the first `sample` items: each item and its annotations as model instances, its latest
    decision, its state by annotate.rules, the same row (curation.services.version_rows), and a DatasetRow
    saved one at a time. Rolled back: it only measures."""
    from django.db import transaction

    from curation.models import DatasetRow, DatasetVersion
    from curation.services import version_rows

    draft = fresh_draft(project, "bench-freeze-naive")
    filters = version_rows.VersionFilters()
    context = version_rows._context(project, filters.consensus)
    started = time.perf_counter()
    rows = 0
    with transaction.atomic():
        for item in project.items.order_by("id")[:sample]:
            row = _naive_row(project, item, filters, context)
            if row is not None:
                DatasetRow.objects.create(version=draft, position=rows, **row)
                rows += 1
        seconds = time.perf_counter() - started
        transaction.set_rollback(True)
    DatasetVersion.objects.filter(pk=draft.pk).delete()
    return {"items": sample, "rows": rows, "seconds": seconds}


def _naive_row(project, item, filters, context) -> dict[str, Any] | None:  # type: ignore[no-untyped-def]
    from annotate.rules import item_state, label_summary
    from curation.services import version_rows as vr

    annotations = list(item.annotations.select_related("annotator").order_by("id"))
    latest = item.adjudications.order_by("-created_at", "-id").first()
    summary = label_summary([(a.origin, a.strength, a.ratings) for a in annotations], wanted=project.overlap)
    state = item_state(summary, latest.decision if latest else None)
    if state not in filters.states:
        return None
    labels = [
        vr.Label(a.pk, a.annotator_id, a.strength, a.origin, a.schema_id, a.ratings, a.spans, a.missing,
                 a.annotator.username)
        for a in annotations
    ]  # fmt: skip
    prompt_json = vr.canonical_json(item.prompt)
    facts = vr.ItemFacts(item.pk, item.prompt, prompt_json, item.context, item.response_a, item.response_b,
                         item.source, item.is_gold, item.extra_overlap, item.metadata)  # fmt: skip
    decision = vr.Decision(latest.strength, latest.ratings) if latest is not None else None
    candidate = vr._candidate(vr.ItemRecord(facts, labels, state, decision), context)
    if candidate is None or not vr._passes(candidate, filters):
        return None
    split = vr.split_for(vr.prompt_hash(item.prompt), seed=filters.seed, fractions=filters.splits)
    return candidate.row_fields(split=split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=100_000, help="items in the project (up to 1,000,000)")
    parser.add_argument("--sample", type=int, default=3000, help="items the naive loop runs on")
    parser.add_argument("--no-naive", action="store_true", help="skip the naive loop (and the report)")
    args = parser.parse_args()
    django_setup(DATABASE)
    from annotate.models import Annotation

    started = time.perf_counter()
    project = build_project(args.items)
    annotations = Annotation.objects.filter(item__project=project).count()
    print(f"project {project.pk}: {args.items:,} items, {annotations:,} annotations, ready in "
          f"{time.perf_counter() - started:.0f} s", flush=True)  # fmt: skip
    service = service_freeze(project)
    print("service", service, flush=True)
    if args.no_naive:
        return
    naive = naive_freeze(project, args.sample)
    print("naive", naive, flush=True)
    report(args.items, annotations, service, naive)


def report(items: int, annotations: int, service: dict[str, Any], naive: dict[str, Any]) -> None:
    service_rate = service["rows"] / service["seconds"]
    naive_rate = naive["rows"] / naive["seconds"]
    naive_total = service["rows"] / naive_rate
    body = f"""
Freezing a dataset version of a project of {items:,} items and {annotations:,} annotations (three per item from a
hundred annotators, with HelpSteer2 ratings and some error spans; a quarter disputed, one in twenty imported-only,
a curator's decision on one in fifty) under the default filters (agreed and adjudicated items, mean consensus),
PostgreSQL on the same machine ({machine()}; load average {service["load"]:.1f} at the end, other work included).

| freeze | rows | time | throughput |
| --- | --- | --- | --- |
| Concord (`curation.tasks.dataset_version_freeze_run`) | {service["rows"]:,} | {service["seconds"]:.1f} s \
| **{service_rate:,.0f} rows/s** |
| Naive ORM loop (each item and its annotations as model instances, `DatasetRow.objects.create` per row), \
{naive["items"]:,} items extrapolated | {service["rows"]:,} | {naive_total:,.0f} s | {naive_rate:,.0f} rows/s |

Concord is **{service_rate / naive_rate:.0f}x** as fast. It picks the qualifying items in one SQL pass
(curation.rule_sql, the SQL mirror of annotate.rules), reads 2,000 of them at a time with their annotations
aggregated into JSON (the next chunk read meanwhile on a second connection), makes each row in Python with the
consensus rule, and writes the rows with COPY, hashing them as it goes (the hash equals the one read back from
the stored rows: checked). Its process used {service["cpu"]:.1f} s of CPU; PostgreSQL's two backends run beside
it. Content hash {service["hash"][:16]}…

{BEFORE}

Command: `.venv/bin/python bench/freeze_version.py --items {items}`
"""
    write_section("Freezing a large dataset version", body)
    print(body)


if __name__ == "__main__":
    main()
