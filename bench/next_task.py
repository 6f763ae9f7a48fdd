"""How long "give me my next item" takes on a big project: Concord's queue against a random pick.

Concord takes the least-annotated open item through an index, locking with SKIP LOCKED. The comparison is
the next-task query of Label Studio's community edition: the same filters, then ORDER BY random() over every
remaining task, which sorts the whole remainder on each request. Both run here, interleaved, on the same
database, with the same lease write; the lease is removed again (untimed) so every call sees the same state.
Concord runs a second time with a selection strategy's ranks on --ranked open items (Item.selection_rank, as a
selection run writes them), which the queue serves first through a partial index of its own.

    .venv/bin/python bench/next_task.py --items 100000 --requests 300
"""

import argparse
import hashlib
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import django_setup, machine, summary_ms, timed, write_section

ANNOTATORS = 20
OVERLAP = 3


def build_project(items: int):  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from annotate.models import Assignment, Item, Membership, Project

    name = f"bench-next-task-{items}"
    project, _ = Project.objects.get_or_create(name=name, defaults={"overlap": OVERLAP})
    User = get_user_model()
    users = [User.objects.get_or_create(username=f"bench-annotator-{i}")[0] for i in range(ANNOTATORS)]
    for user in users:
        Membership.objects.get_or_create(project=project, user=user)
    if Item.objects.filter(project=project).count() == items:
        return project, users
    Item.objects.filter(project=project).delete()
    rng = random.Random(0)
    batch = []
    for n in range(items):
        # 40% of items are already complete, the rest have 0-2 annotations: a project part-way through.
        count = OVERLAP if n < items * 0.4 else rng.randint(0, OVERLAP - 1)
        text = f"Prompt {n}: " + "lorem ipsum " * rng.randint(5, 40)
        batch.append(
            Item(
                project=project,
                prompt=[{"role": "user", "content": text}],
                response_a=f"A{n} " + "dolor " * 60,
                response_b=f"B{n} " + "sit amet " * 50,
                content_hash=hashlib.sha256(f"{name}:{n}".encode()).hexdigest(),
                annotation_count=count,
            )
        )
        if len(batch) == 5000:
            Item.objects.bulk_create(batch)
            batch = []
    Item.objects.bulk_create(batch)
    # Each annotator has already finished a few hundred items, which the queue must step around.
    ids = list(Item.objects.filter(project=project).values_list("id", flat=True))
    now = timezone.now()
    done = [
        Assignment(item_id=item_id, annotator=user, status="submitted", leased_at=now, expires_at=now)
        for user in users
        for item_id in rng.sample(ids, 300)
    ]
    Assignment.objects.bulk_create(done, batch_size=5000, ignore_conflicts=True)
    return project, users


def rank_open_items(project, count: int) -> None:  # type: ignore[no-untyped-def]
    """Give `count` random open items a selection rank, count down to 1, as a selection run does."""
    from annotate.models import Item

    open_ids = list(Item.objects.filter(project=project, annotation_count__lt=OVERLAP).values_list("id", flat=True))
    for rank, item_id in enumerate(random.Random(1).sample(open_ids, count)):
        Item.objects.filter(pk=item_id).update(selection_rank=count - rank)


def random_next(project, annotator):  # type: ignore[no-untyped-def]
    """The same candidate set as Concord's queue, picked with ORDER BY random()."""
    from django.db import transaction
    from django.utils import timezone

    from annotate.services import labeling

    now = timezone.now()
    with transaction.atomic():
        candidates = labeling._candidates(project=project, annotator=annotator, now=now, passed=[], stage="rest")
        item = candidates.order_by("?").select_for_update(skip_locked=True, of=("self",)).first()
        if item is not None:
            labeling._lease(item=item, annotator=annotator, now=now)
        return item


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--ranked", type=int, default=500, help="open items given a selection rank")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    django_setup()
    from django.db import connection

    from annotate.models import Assignment, Item
    from annotate.services.labeling import assignment_next

    project, users = build_project(args.items)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    concord, rival, ranked = [], [], []
    Item.objects.filter(project=project, selection_rank__gt=0).update(selection_rank=0)
    for n in range(args.requests):
        user = users[n % len(users)]
        concord.append(timed(lambda: assignment_next(project=project, annotator=user)))  # noqa: B023
        Assignment.objects.filter(annotator=user, status="leased").delete()
        rival.append(timed(lambda: random_next(project, user)))  # noqa: B023
        Assignment.objects.filter(annotator=user, status="leased").delete()
    rank_open_items(project, args.ranked)
    for n in range(args.requests):
        user = users[n % len(users)]
        ranked.append(timed(lambda: assignment_next(project=project, annotator=user)))  # noqa: B023
        Assignment.objects.filter(annotator=user, status="leased").delete()
    Item.objects.filter(project=project, selection_rank__gt=0).update(selection_rank=0)
    ratio = sorted(rival)[len(rival) // 2] / sorted(concord)[len(concord) // 2]
    lines = [
        f"Next-task latency on a project of {args.items:,} items (40% complete, overlap {OVERLAP}, "
        f"{ANNOTATORS} annotators with 300 finished items each), {args.requests} requests each, interleaved, "
        f"one process, PostgreSQL on the same machine ({machine()}).",
        "",
        "| next-task query | latency |",
        "| --- | --- |",
        f"| Concord `assignment_next` (least-annotated first, index scan, SKIP LOCKED) | {summary_ms(concord)} |",
        f"| ORDER BY random() over the remaining items (Label Studio community next-task) | {summary_ms(rival)} |",
        f"| Concord `assignment_next` with a selection strategy's ranks on {args.ranked:,} open items "
        f"(served first, partial index) | {summary_ms(ranked)} |",
        "",
        f"Median ratio: Concord is **{ratio:.0f}x** faster.",
        "",
        f"Command: `.venv/bin/python bench/next_task.py --items {args.items} --requests {args.requests} "
        f"--ranked {args.ranked}`",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("Next task on a big project", "\n".join(lines))


if __name__ == "__main__":
    main()
