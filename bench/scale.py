"""Builds the big project the scale benchmarks run against: 1,000,000 items, 300k annotations from 100 annotators.

Built once with COPY in a database of its own (concord_scale) and kept between runs; each step checks what is
already there, so a second run only fills in what is missing and prints the project. bench/pages.py loads every
curator and admin page of it, bench/http_load.py drives 100 annotators at it over HTTP.

What it holds, beside the items (three sources, two import batches, 60% with a source label):
- 100 annotators `bench-annotator-000` .. `-099`, a curator `bench-curator` and an admin `bench-admin` (also a
  Django superuser), all with the password PASSWORD below; a tenth of the annotators are careless (they pick the
  wrong side three times as often);
- annotations (preference, HelpSteer2 ratings, now and then an error span) on a tenth of the items, most by three
  annotators, some by two or one, with a submitted assignment each, a few skips, a fifth split or spread;
- a few hundred gold items with their GoldAnswer, each answered by 30 annotators; flags; curators' adjudications;
- a frozen dataset version of the agreed items (the project's own freeze) and a draft; a finished training run
  with its reward model, active, and its scores of every item; a finished curation campaign whose one round
  decided the unverified pairs (the project's own decide stage).

Every item's label summary columns are recomputed by the project's own repair (`repair_label_summaries`), so they
are what the write paths would have left.

    .venv/bin/python bench/scale.py                   # 1M items, 300k annotations (about 15 minutes)
    .venv/bin/python bench/scale.py --items 20000 --annotations 20000 --database concord_scale_small
"""

import argparse
import hashlib
import json
import random
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import django_setup

DATABASE = "concord_scale"
PASSWORD = "bench-scale-password"  # noqa: S105 (a benchmark database's logins)
ANNOTATORS = 100
CURATOR = "bench-curator"
ADMIN = "bench-admin"
OVERLAP = 3
GOLD_ITEMS = 300
GOLD_ANSWERS_EACH = 30  # annotators who answered each gold item
BATCH = 50_000
SOURCES = ("hh-rlhf-helpful", "ultrafeedback", "helpsteer2")
ATTRIBUTES = ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
CATEGORIES = ("irrelevant", "redundant", "incoherent")
CARELESS_EVERY = 10  # annotator i is careless when i % CARELESS_EVERY == 0
FLAGS = 2_000
ADJUDICATIONS = 500
SKIPS = 5_000


def annotator_name(index: int) -> str:
    return f"bench-annotator-{index:03d}"


def project_name(items: int) -> str:
    return f"bench-scale-{items}"


def log(message: str) -> None:
    print(f"[scale {time.strftime('%H:%M:%S')}] {message}", flush=True)


# COPY with every column of the table: the ones given, and each other one with its field's default (so a column
# added to a model later does not break the build, as long as it has a default or may be empty).


def copy_rows(model: Any, rows: Iterable[dict[str, Any]]) -> int:
    """COPY these rows (dicts by field column) into the model's table; returns how many."""
    from django.db import connection

    iterator = iter(rows)
    first = next(iterator, None)
    if first is None:
        return 0
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    columns = [f.column for f in fields]
    defaults: dict[str, Any] = {}
    for field in fields:
        if field.column in first:
            continue
        value = field.get_default()
        if value is None and not field.null:
            raise RuntimeError(f"{model.__name__}.{field.name} has no default: give it in the rows")
        defaults[field.column] = _encode(field, value)
    json_columns = {f.column for f in fields if f.get_internal_type() == "JSONField"}
    count = 0
    sql = f"COPY {model._meta.db_table} ({', '.join(columns)}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(sql) as copy:
        for row in _chain(first, iterator):
            values = []
            for column in columns:
                if column in row:
                    value = row[column]
                    values.append(json.dumps(value) if column in json_columns and value is not None else value)
                else:
                    values.append(defaults[column])
            copy.write_row(values)
            count += 1
    return count


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def _encode(field: Any, value: Any) -> Any:
    if value is not None and field.get_internal_type() == "JSONField":
        return json.dumps(value)
    return value


# Text: sentences drawn from a fixed pool, so that rows have realistic sizes (a prompt of a sentence or two,
# responses of 400-900 characters) without the cost of generating words one by one.

_WORD_TEXT = (
    "the model answer question response user helpful correct clear detail explain example because however "
    "therefore first second finally data result method simple complex important note step value system "
    "process function error case reason source context fact number list table point change order time"
)
WORDS = _WORD_TEXT.split()


def sentence_pool(rng: random.Random, size: int = 2000) -> list[str]:
    pool = []
    for _ in range(size):
        words = [rng.choice(WORDS) for _ in range(rng.randint(8, 18))]
        pool.append(" ".join(words).capitalize() + ".")
    return pool


def paragraph(rng: random.Random, pool: list[str], sentences: tuple[int, int]) -> str:
    return " ".join(rng.choice(pool) for _ in range(rng.randint(*sentences)))


# The project, its people and its schema.


def ensure_people(items: int) -> tuple[Any, list[Any], Any, Any]:
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import transaction

    from annotate.models import LabelSchema, Membership, Project, Role
    from annotate.services.schemas import default_schema

    User = get_user_model()
    hashed = make_password(PASSWORD)  # one hash for all: 102 PBKDF2 rounds would take a minute
    names = [annotator_name(i) for i in range(ANNOTATORS)] + [CURATOR, ADMIN]
    with transaction.atomic():
        existing = set(User.objects.filter(username__in=names).values_list("username", flat=True))
        User.objects.bulk_create([User(username=name, password=hashed) for name in names if name not in existing])
        User.objects.filter(username__in=names).update(password=hashed)
        User.objects.filter(username=ADMIN).update(is_staff=True, is_superuser=True)
        project, _ = Project.objects.get_or_create(
            name=project_name(items),
            defaults={
                "overlap": OVERLAP,
                "gold_rate": 0.05,
                "guidelines": "Prefer the **more helpful**, correct and harmless response. Built by bench/scale.py.",
            },
        )
        if not LabelSchema.objects.filter(project=project).exists():
            LabelSchema.objects.create(project=project, version=1, definition=default_schema())
        by_name = {user.username: user for user in User.objects.filter(username__in=names)}
        roles = {name: Role.ANNOTATOR for name in names[:ANNOTATORS]} | {CURATOR: Role.CURATOR, ADMIN: Role.ADMIN}
        have = set(Membership.objects.filter(project=project).values_list("user__username", flat=True))
        Membership.objects.bulk_create(
            [Membership(project=project, user=by_name[n], role=role) for n, role in roles.items() if n not in have]
        )
    annotators = [by_name[name] for name in names[:ANNOTATORS]]
    return project, annotators, by_name[CURATOR], by_name[ADMIN]


# Items.


def ensure_items(project: Any, admin: Any, items: int) -> None:
    from django.db import transaction
    from django.utils import timezone

    from annotate.models import ImportBatch, Item

    have = Item.objects.filter(project=project).count()
    if have == items:
        log(f"items: {items:,} already there")
        return
    if have:
        # Deleting a million items through the ORM's cascade would take longer than building them again.
        sys.exit(f"{have:,} items of {items:,} (an interrupted build?): run again with --fresh")
    log(f"items: building {items:,} with COPY")
    ImportBatch.objects.filter(project=project).delete()
    now = timezone.now()
    split = int(items * 0.6)
    batches = []
    for index, (name, count) in enumerate((("helpful-train.jsonl.gz", split), ("ultra.jsonl", items - split))):
        batches.append(
            ImportBatch.objects.create(
                project=project,
                created_by=admin,
                file_name=name,
                format="trl" if index else "hh-rlhf",
                seed=index,
                status=ImportBatch.Status.DONE,
                records_read=count,
                bytes_total=count * 1500,
                bytes_read=count * 1500,
                items_created=count,
                finished_at=now - timedelta(days=60 - index),
            )
        )
    rng = random.Random(1)
    pool = sentence_pool(rng)
    started = time.perf_counter()
    for start in range(0, items, BATCH):
        end = min(items, start + BATCH)
        with transaction.atomic():
            copy_rows(Item, _item_rows(project, batches, split, pool, start, end, now))
        log(f"  {end:,} items ({time.perf_counter() - started:.0f} s)")


def is_gold_position(n: int, items: int) -> bool:
    return n % max(1, items // GOLD_ITEMS) == 0 and n // max(1, items // GOLD_ITEMS) < GOLD_ITEMS


def _item_rows(project: Any, batches: list[Any], split: int, pool: list[str], start: int, end: int, now: datetime):  # type: ignore[no-untyped-def]
    rng = random.Random(start)
    items = project_items_target(project)
    for n in range(start, end):
        prompt = [{"role": "user", "content": f"{paragraph(rng, pool, (1, 3))} (question {n})"}]
        if rng.random() < 0.2:  # a multi-turn conversation now and then
            earlier = [
                {"role": "user", "content": paragraph(rng, pool, (1, 2))},
                {"role": "assistant", "content": paragraph(rng, pool, (2, 4))},
            ]
            prompt = earlier + prompt
        response_a = paragraph(rng, pool, (3, 8))
        response_b = paragraph(rng, pool, (3, 8))
        source = SOURCES[0] if n < split else SOURCES[1 + n % 2]
        yield {
            "project_id": project.pk,
            "import_batch_id": batches[0].pk if n < split else batches[1].pk,
            "prompt": prompt,
            "context": "",
            "response_a": response_a,
            "response_b": response_b,
            "source": source,
            "external_id": f"{source}-{n}",
            "metadata": {"row": n},
            "content_hash": hashlib.sha256(f"{project.pk}:{n}:{response_a}:{response_b}".encode()).hexdigest(),
            "source_label": rng.choice((-1, 1)) if rng.random() < 0.6 else None,
            "is_gold": is_gold_position(n, items),
            "created_at": now - timedelta(days=60, seconds=-n),
        }


def project_items_target(project: Any) -> int:
    return int(project.name.rsplit("-", 1)[1])


# Annotations, with a submitted assignment each, and skips.


def ensure_annotations(project: Any, annotators: list[Any], fraction: float) -> bool:
    """Annotations on `fraction` of the ordinary items (plus the gold ones); True when they were (re)built."""
    from django.db import transaction

    from annotate.models import Annotation, Assignment, Item, LabelSchema

    if Annotation.objects.filter(item__project=project).exists():
        log(f"annotations: {Annotation.objects.filter(item__project=project).count():,} already there")
        return False
    schema = LabelSchema.objects.filter(project=project).order_by("-version").first()
    rng = random.Random(2)
    pool = sentence_pool(rng, 300)
    ids = list(Item.objects.filter(project=project).order_by("pk").values_list("pk", "is_gold", "response_a"))
    log(f"annotations: building on {fraction:.0%} of {len(ids):,} items with COPY")
    started = time.perf_counter()
    total = 0
    for start in range(0, len(ids), BATCH * 4):
        chunk = ids[start : start + BATCH * 4]
        plans = [(item_id, text, _annotators_for(rng, is_gold, fraction)) for item_id, is_gold, text in chunk]
        with transaction.atomic():
            annotations = list(_annotation_rows(rng, pool, plans, annotators, schema.pk))
            copy_rows(Annotation, annotations)
            copy_rows(Assignment, _assignment_rows(annotations))
            _count_annotations(project, [p[0] for p in plans if p[2]])
        total += len(annotations)
        log(f"  {start + len(chunk):,} items, {total:,} annotations ({time.perf_counter() - started:.0f} s)")
    _skips(project, annotators, rng)
    return True


def _annotators_for(rng: random.Random, is_gold: bool, fraction: float) -> list[int]:
    if is_gold:
        return rng.sample(range(ANNOTATORS), GOLD_ANSWERS_EACH)
    draw = rng.random()
    # Most annotated items are complete (three), some still in progress (two or one).
    if draw < fraction * 0.85:
        return rng.sample(range(ANNOTATORS), 3)
    if draw < fraction * 0.95:
        return rng.sample(range(ANNOTATORS), 2)
    if draw < fraction:
        return rng.sample(range(ANNOTATORS), 1)
    return []


def _annotation_rows(rng: random.Random, pool: list[str], plans: list[Any], annotators: list[Any], schema_id: int):  # type: ignore[no-untyped-def]
    end = datetime.now().astimezone()
    for item_id, text, chosen in plans:
        side = rng.choice((-1, 1))
        contested = rng.random() < 0.2  # a fifth of the items split the annotators or spread their ratings
        base = {name: rng.randint(1, 3) for name in ATTRIBUTES}
        for index in chosen:
            wrong = rng.random() < (0.3 if index % CARELESS_EVERY == 0 else 0.1) or (contested and rng.random() < 0.4)
            strength = 0 if rng.random() < 0.05 else (-side if wrong else side) * rng.randint(1, 3)
            spread = 2 if contested else 1
            ratings = {
                response: {name: max(0, min(4, value + rng.randint(-spread, spread))) for name, value in base.items()}
                for response in ("a", "b")
            }
            spans = []
            if rng.random() < 0.1 and len(text) > 40:
                spans = [{"response": "a", "start": 0, "end": 30, "category": rng.choice(CATEGORIES)}]
            created = end - timedelta(days=rng.uniform(0, 45))
            yield {
                "item_id": item_id,
                "annotator_id": annotators[index].pk,
                "schema_id": schema_id,
                "origin": "human",
                "strength": strength,
                "justification": rng.choice(pool) if rng.random() < 0.5 else "",
                "ratings": ratings,
                "spans": spans,
                "missing": [],
                "corrections": {},
                "seconds_spent": round(rng.lognormvariate(4, 0.6), 1),
                "submission_uuid": uuid.UUID(int=rng.getrandbits(128), version=4),
                "created_at": created,
                "updated_at": created,
            }


def _assignment_rows(annotations: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for row in annotations:
        leased = row["created_at"] - timedelta(seconds=row["seconds_spent"])
        yield {
            "item_id": row["item_id"],
            "annotator_id": row["annotator_id"],
            "status": "submitted",
            "leased_at": leased,
            "expires_at": leased + timedelta(minutes=30),
            "skip_reason": "",
            "finished_at": row["created_at"],
        }


_COUNT_SQL = """
UPDATE {item} AS item SET annotation_count = counted.n
FROM (SELECT item_id, count(*) AS n FROM {annotation} WHERE item_id = ANY(%s) GROUP BY item_id) AS counted
WHERE item.id = counted.item_id
"""


def _count_annotations(project: Any, item_ids: list[int]) -> None:
    from django.db import connection

    from annotate.models import Annotation, Item

    sql = _COUNT_SQL.format(item=Item._meta.db_table, annotation=Annotation._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(sql, [item_ids])


def _skips(project: Any, annotators: list[Any], rng: random.Random) -> None:
    """Skipped assignments on items nobody annotated yet (so they stay open for the others)."""
    from annotate.models import Assignment, Item

    open_ids = list(
        Item.objects.filter(project=project, annotation_count=0, is_gold=False)
        .order_by("-pk")
        .values_list("pk", flat=True)[:SKIPS]
    )
    now = datetime.now().astimezone()
    reasons = ("Outside my expertise", "Broken or unreadable item", "Harmful or disturbing content")
    rows = []
    for item_id in open_ids:
        leased = now - timedelta(days=rng.uniform(0, 45))
        rows.append(
            {
                "item_id": item_id,
                "annotator_id": annotators[rng.randrange(ANNOTATORS)].pk,
                "status": "skipped",
                "leased_at": leased,
                "expires_at": leased + timedelta(minutes=30),
                "skip_reason": rng.choice(reasons),
                "finished_at": leased + timedelta(seconds=20),
            }
        )
    copy_rows(Assignment, rows)
    log(f"  {len(rows):,} skips")


# Gold answers, flags, adjudications.


def ensure_curation(project: Any, curator: Any) -> None:
    from django.db import transaction
    from django.db.models import F, Q

    from annotate.models import Annotation, GoldAnswer, Item
    from curation.models import Adjudication, ItemFlag

    rng = random.Random(3)
    with transaction.atomic():
        if not GoldAnswer.objects.filter(item__project=project).exists():
            gold = list(Item.objects.filter(project=project, is_gold=True).values_list("pk", "strength_sum"))
            copy_rows(
                GoldAnswer,
                (
                    {
                        "item_id": item_id,
                        "preference_sign": 1 if total >= 0 else -1,
                        "ratings": {"a": {"helpfulness": 2}, "b": {"helpfulness": 3}} if rng.random() < 0.5 else {},
                        "note": "Set by bench/scale.py from the majority.",
                        "created_by_id": curator.pk,
                        "created_at": datetime.now().astimezone(),
                    }
                    for item_id, total in gold
                ),
            )
            log(f"gold answers: {len(gold):,}")
        if not ItemFlag.objects.filter(item__project=project).exists():
            annotated = Annotation.objects.filter(item__project=project, item__is_gold=False)
            picks = list(annotated.order_by("?").values_list("item_id", "annotator_id")[: FLAGS * 2])
            seen: set[int] = set()
            rows = []
            for item_id, annotator_id in picks:
                if item_id in seen or len(rows) == FLAGS:
                    continue
                seen.add(item_id)
                rows.append(
                    {
                        "item_id": item_id,
                        "raised_by_id": annotator_id,
                        "reason": rng.choice(("Both responses are wrong", "Prompt is cut off", "Harmful content")),
                        "resolved": rng.random() < 0.2,
                        "created_at": datetime.now().astimezone() - timedelta(days=rng.uniform(0, 30)),
                    }
                )
            copy_rows(ItemFlag, rows)
            log(f"flags: {len(rows):,}")
        if not Adjudication.objects.filter(item__project=project).exists():
            disputed = Item.objects.filter(project=project, is_gold=False, annotation_count__gte=OVERLAP).filter(
                Q(prefer_a_count__gt=0, prefer_b_count__gt=0) | Q(strength_max__gt=F("strength_min") + 2)
            )
            ids = list(disputed.order_by("pk").values_list("pk", flat=True)[:ADJUDICATIONS])
            decisions = ("label", "label", "label", "ambiguous", "exclude", "more")
            rows = []
            for item_id in ids:
                decision = rng.choice(decisions)
                rows.append(
                    {
                        "item_id": item_id,
                        "curator_id": curator.pk,
                        "decision": decision,
                        "strength": rng.choice((-2, -1, 1, 2)) if decision == "label" else None,
                        "ratings": {},
                        "reason": "Read both; the guidelines favour this side.",
                        "created_at": datetime.now().astimezone() - timedelta(days=rng.uniform(0, 20)),
                    }
                )
            copy_rows(Adjudication, rows)
            log(f"adjudications: {len(rows):,}")


def ensure_summaries(project: Any, rebuilt: bool) -> None:
    """The label summaries of the items with annotations, by the project's own repair (items_labels_repair, what
    `manage.py repair_label_summaries` runs), a chunk at a time; the others' columns are right as COPY left them
    (no annotations). After an interrupted build, only the items not repaired yet."""
    from django.db import OperationalError

    from annotate.models import Item
    from annotate.services.label_summary import REFRESH_CHUNK, items_labels_repair

    annotated = Item.objects.filter(project=project, annotation_count__gt=0)
    todo = annotated if rebuilt else annotated.filter(strength_count=0)
    ids = list(todo.order_by("pk").values_list("pk", flat=True))
    if not ids:
        log("label summaries: up to date")
        return
    log(f"label summaries: the project's repair of {len(ids):,} annotated items")
    started = time.perf_counter()
    for start in range(0, len(ids), REFRESH_CHUNK):
        chunk = ids[start : start + REFRESH_CHUNK]
        for attempt in range(5):
            try:
                items_labels_repair(item_ids=chunk)
                break
            except OperationalError as error:  # a deadlock with someone else's write to the same items
                log(f"  chunk at {start:,}: {error.__class__.__name__}, again ({attempt + 1})")
                time.sleep(1 + attempt)
        else:
            sys.exit("the repair kept failing: run bench/scale.py again")
        if start // REFRESH_CHUNK % 10 == 9:
            log(f"  {start + len(chunk):,} items ({time.perf_counter() - started:.0f} s)")
    log(f"  done in {time.perf_counter() - started:.0f} s")


# A frozen version, a training run with an active reward model that scored every item, a finished campaign.


def ensure_versions(project: Any, admin: Any) -> Any:
    from curation.models import DatasetVersion
    from curation.services.versions import dataset_version_create, dataset_version_freeze

    frozen = DatasetVersion.objects.filter(projects=project, status=DatasetVersion.Status.FROZEN).first()
    if frozen is None:
        DatasetVersion.objects.filter(projects=project).exclude(status=DatasetVersion.Status.DRAFT).delete()
        version = dataset_version_create(name="rm-data-1", projects=[project], filters={}, created_by=admin)
        log("dataset version: freezing rm-data-1 with the project's own freeze (minutes)")
        started = time.perf_counter()
        frozen = dataset_version_freeze(version=version)
        log(f"  {frozen.row_count:,} rows in {time.perf_counter() - started:.0f} s")
    if not DatasetVersion.objects.filter(projects=project, status=DatasetVersion.Status.DRAFT).exists():
        dataset_version_create(
            name="rm-data-2 (draft)", projects=[project], filters={"min_agreement": 0.6}, created_by=admin
        )
    return frozen


def ensure_model(project: Any, admin: Any, version: Any) -> Any:
    from django.db import transaction

    from annotate.models import Item
    from training.models import ItemScore, RewardModel, TrainingRun

    model = RewardModel.objects.filter(project=project, is_active=True).first()
    items = Item.objects.filter(project=project).count()
    if model is not None and ItemScore.objects.filter(reward_model=model).count() == items:
        log("reward model: active, with a score of every item")
        return model
    log(f"reward model: a finished run, its model (active) and {items:,} scores with COPY")
    with transaction.atomic():
        RewardModel.objects.filter(project=project).delete()
        TrainingRun.objects.filter(project=project).delete()
        now = datetime.now().astimezone()
        history = [
            {"step": step, "loss": round(0.69 * 0.97 ** (step / 10), 4), "eval_accuracy": 0.6 + 0.1 * step / 600}
            for step in range(0, 601, 10)
        ]
        run = TrainingRun.objects.create(
            project=project,
            dataset_version=version,
            config={"backbone": "bench/none", "objective": "bt", "epochs": 1, "batch_size": 16},
            status=TrainingRun.Status.SUCCEEDED,
            step=600,
            total_steps=600,
            epoch=1.0,
            loss=history[-1]["loss"],
            eval_accuracy=0.7,
            metrics={"heldout": {"accuracy": 0.7, "pairs": 9000}},
            history=history,
            log="Synthetic run written by bench/scale.py.\n",
            started_at=now - timedelta(hours=2),
            finished_at=now - timedelta(hours=1),
            output_dir="/bench/none",
            created_by=admin,
        )
        model = RewardModel.objects.create(project=project, run=run, path="/bench/none", is_active=True)
    rng = random.Random(4)
    rows = Item.objects.filter(project=project).order_by("pk").values_list("pk", "source_label", "strength_sum")
    last = 0
    while True:
        # Read a batch, then COPY it: a connection cannot read while its COPY is open.
        batch = list(rows.filter(pk__gt=last)[:BATCH])
        if not batch:
            return model
        last = batch[-1][0]
        with transaction.atomic():
            copy_rows(ItemScore, _score_rows(rng, model.pk, batch))


def _score_rows(rng: random.Random, model_id: int, batch: list[Any]) -> Iterator[dict[str, Any]]:
    import math

    now = datetime.now().astimezone()
    for item_id, label, strength in batch:
        side = label or (1 if strength > 0 else -1 if strength < 0 else rng.choice((1, -1)))
        if rng.random() < 0.15:  # the model contradicts the labels now and then
            side = -side
        margin = rng.gauss(1.2 * side, 1.0)
        yield {
            "item_id": item_id,
            "reward_model_id": model_id,
            "reward_a": 0.0,
            "reward_b": margin,
            "margin": margin,
            "probability_b": 1 / (1 + math.exp(-margin)),
            "ensemble_mean": margin,
            "ensemble_std": abs(rng.gauss(0, 0.3)),
            "created_at": now,
        }


def ensure_campaign(project: Any, admin: Any, model: Any) -> None:
    """A finished campaign whose one round decided every silver and unlabelled pair (its decide stage)."""
    from django.db import transaction

    from training.models import Campaign, CampaignRound, PairDecision
    from training.services import campaigns

    if PairDecision.objects.filter(round__campaign__project=project).exists():
        log("campaign: already there")
        return
    Campaign.objects.filter(project=project).delete()
    with transaction.atomic():
        campaign = Campaign.objects.create(
            project=project, name="skywork-1", config={"budget_per_round": 10_000}, created_by=admin
        )
        round_ = CampaignRound.objects.create(
            campaign=campaign, number=1, stage="decide", status="running", training_run=model.run, temperature=1.0
        )
    log("campaign: deciding every silver and unlabelled pair (the project's decide stage, a minute or two)")
    started = time.perf_counter()
    try:
        campaigns._stage_decide(round_)
    except Exception as error:  # the stage's internals may change; the rest of the project stands without it
        log(f"  the decide stage failed ({error!r}): the campaign keeps no decisions")
    now = datetime.now().astimezone()
    CampaignRound.objects.filter(pk=round_.pk).update(stage="done", status="done", finished_at=now)
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.FINISHED, finished_at=now)
    decided = PairDecision.objects.filter(round=round_).count()
    log(f"  {decided:,} decisions in {time.perf_counter() - started:.0f} s")


def analyze(*, full: bool = False) -> None:
    from django.db import connection

    from annotate.models import Item

    with connection.cursor() as cursor:
        if full:
            # The repair rewrote every item row twice: compact the table, as a settled production table would be,
            # so that a page that scans it reads a million rows, not three million row versions.
            log("VACUUM FULL of the items (the repair left two dead versions of every row)")
            cursor.execute(f"VACUUM (FULL, ANALYZE) {Item._meta.db_table}")
        log("VACUUM ANALYZE (the build rewrote every table)")
        cursor.execute("VACUUM ANALYZE")


def drop_database(database: str) -> None:
    import os

    import psycopg

    url = os.environ.get("DATABASE_URL", "postgres://concord@127.0.0.1:55432/concord")
    with psycopg.connect(url, autocommit=True) as conn:
        log(f"dropping database {database}")
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def scale_project(items: int) -> Any:
    """The built project, for the other benches; exits with a hint when it is not built."""
    from annotate.models import Project

    project = Project.objects.filter(name=project_name(items)).first()
    if project is None:
        sys.exit(f"No project {project_name(items)!r} in this database: run bench/scale.py --items {items} first.")
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--annotations", type=int, default=300_000, help="about this many annotations in all")
    parser.add_argument("--no-freeze", action="store_true", help="leave out the frozen version, model, campaign")
    parser.add_argument("--database", default=DATABASE, help="the benchmark database (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="drop the database and build it again")
    args = parser.parse_args()
    if args.fresh:
        drop_database(args.database)
    django_setup(args.database)
    from annotate.models import Annotation, Item

    started = time.perf_counter()
    project, annotators, curator, admin = ensure_people(args.items)
    ensure_items(project, admin, args.items)
    # Each annotated ordinary item gets 2.8 annotations on average (_annotators_for), each gold item 30.
    fraction = max(0.0, args.annotations - GOLD_ITEMS * GOLD_ANSWERS_EACH) / (2.8 * args.items)
    rebuilt = ensure_annotations(project, annotators, min(1.0, fraction))
    ensure_summaries(project, rebuilt)
    ensure_curation(project, curator)
    if rebuilt:
        analyze(full=True)
    if not args.no_freeze:
        version = ensure_versions(project, admin)
        model = ensure_model(project, admin, version)
        ensure_campaign(project, admin, model)
    if rebuilt:
        analyze()
    items = Item.objects.filter(project=project).count()
    annotations = Annotation.objects.filter(item__project=project).count()
    log(
        f"project {project.name!r} (id {project.pk}) in database {args.database}: {items:,} items, {annotations:,} "
        f"annotations; logins {annotator_name(0)}..{annotator_name(ANNOTATORS - 1)}, {CURATOR}, {ADMIN} with "
        f"password {PASSWORD!r}; {time.perf_counter() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
