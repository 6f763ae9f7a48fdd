"""Importing a large TRL JSON lines file: Concord's importer (the service the import worker runs) against the naive
way, a row-by-row ORM insert, in the same run.

The file (generated, kept in a temporary folder for the run) holds N TRL preference rows of realistic length:
prompts of about 100-500 characters, chosen and rejected of about 200-900, a fifth of them as chat messages (a
system turn, a user turn, assistant replies), text as language models write it (curly quotes, dashes, the odd
accent or CJK word; quotes, backslashes, tabs and newlines to escape), and one row in a hundred repeating an
earlier one (the importer skips and counts those). Concord's import runs on a fresh project
in a benchmark database of its own, dropped and made again each run; the naive way (json.loads, an exists()
check on the content hash, then Item.objects.create, one record at a time in one transaction) runs on a sample
of the same file into another fresh project, and its rate is extrapolated.

    .venv/bin/python bench/import_scale.py [--records 1000000] [--naive-sample 5000]
"""

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import django_setup, machine, write_section

DATABASE = "concord_bench_import"
VOCABULARY = (
    "the model answer should explain clearly why each step follows from previous one a an of to in is that it for "
    "with as was on are be this by not or from at which but have has had were they you your we can will would "
    "could there their what when where how because however therefore example result value function data error "
    "question response assistant user system please thanks sure here first second finally note important "
    "it’s don’t “quoted” — café naïve Straße 数据"
)
WORDS = VOCABULARY.split()
# Characters a JSON line and a COPY stream both escape: quotes, backslashes, tabs and newlines.
SPECIALS = ['"quoted"', "back\\slash", "tab\tseparated", "new\nline", "para\n\ngraph"]
DUPLICATE_EVERY = 100
CORPUS_WORDS = 200_000


def corpus(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(CORPUS_WORDS)]
    for n in range(0, CORPUS_WORDS, 97):
        words[n] = rng.choice(SPECIALS)
    return " ".join(words)


def passage(rng: random.Random, text: str, low: int, high: int) -> str:
    length = rng.randint(low, high)
    start = rng.randrange(len(text) - length)
    return text[start : start + length].strip()


def record(n: int, rng: random.Random, text: str) -> dict[str, Any]:
    prompt = f"Question {n}: " + passage(rng, text, 100, 500)
    chosen, rejected = passage(rng, text, 200, 900), passage(rng, text, 200, 900)
    if rng.random() >= 0.2:
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return {
        "prompt": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": prompt}],
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }


def write_file(path: Path, records: int) -> int:
    """N records; every DUPLICATE_EVERY-th repeats the record 50 before it. Returns how many are duplicates."""
    rng = random.Random(0)
    text = corpus(rng)
    lines: list[str] = []
    duplicates = 0
    with path.open("w", encoding="utf-8") as f:
        for n in range(records):
            if n >= DUPLICATE_EVERY and n % DUPLICATE_EVERY == 0:
                line, duplicates = lines[n - 50], duplicates + 1
            else:
                line = json.dumps(record(n, rng, text), ensure_ascii=False)
            lines.append(line)
            if len(lines) > DUPLICATE_EVERY:
                lines[n - DUPLICATE_EVERY] = ""  # only the last hundred are ever repeated
            f.write(line + "\n")
    return duplicates


def concord_import(path: Path, admin: Any) -> dict[str, Any]:
    from annotate.models import ImportBatch
    from annotate.services.imports import import_batch_create, item_import
    from annotate.services.projects import project_create

    project = project_create(name="bench-import-concord", overlap=1, created_by=admin)
    batch = import_batch_create(project=project, created_by=admin, file_name=path.name, format="trl", seed=1)
    cpu, database_cpu, load = time.process_time(), backend_cpu(), os.getloadavg()[0]
    started = time.perf_counter()
    batch = item_import(batch=batch, path=path)
    seconds = time.perf_counter() - started
    assert batch.status == ImportBatch.Status.DONE, batch.error
    database_seconds = backend_cpu() - database_cpu if database_cpu is not None else None
    return {
        "records": batch.records_read,
        "items": batch.items_created,
        "duplicates": batch.duplicates_skipped,
        "seconds": seconds,
        "python_cpu": time.process_time() - cpu,
        "database_cpu": database_seconds,
        "load": (load + os.getloadavg()[0]) / 2,
    }


def backend_cpu() -> float | None:
    """CPU seconds the PostgreSQL backend of Django's connection has used, when it runs on this machine."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def naive_import(path: Path, admin: Any, sample: int) -> dict[str, Any]:
    """What an importer written without thought for size does: one record, one exists() and one INSERT at a time
    (in one transaction, so it is still all or nothing)."""
    from django.db import transaction

    from annotate.formats import content_hash
    from annotate.models import Item
    from annotate.services.projects import project_create

    project = project_create(name="bench-import-naive", overlap=1, created_by=admin)
    rng = random.Random(1)
    created = 0
    started = time.perf_counter()
    with transaction.atomic(), path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if number > sample:
                break
            row = json.loads(line)
            prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
            chosen, rejected = (r if isinstance(r, str) else r[0]["content"] for r in (row["chosen"], row["rejected"]))
            a, b, label = (chosen, rejected, -1) if rng.random() < 0.5 else (rejected, chosen, 1)
            digest = content_hash(prompt, a, b)
            if Item.objects.filter(project=project, content_hash=digest).exists():
                continue
            Item.objects.create(
                project=project,
                prompt=prompt,
                response_a=a,
                response_b=b,
                source=path.name,
                external_id=f"line {number}",
                metadata={"import": {"file": path.name, "line": number}},
                content_hash=digest,
                source_label=label,
            )
            created += 1
    return {"records": min(sample, number), "items": created, "seconds": time.perf_counter() - started}


def drop_database(url: str) -> None:
    """Drop the benchmark database, so each run imports into an empty one (deleting a million items through the
    ORM would take longer than importing them); and again at the end."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')  # this script's own connections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--naive-sample", type=int, default=5_000)
    parser.add_argument("--no-write", action="store_true", help="print the figures; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    # The app's database, which django_setup points DATABASE_URL away from.
    url = os.environ.get("DATABASE_URL", "postgres://concord@127.0.0.1:55432/concord")
    drop_database(url)
    django_setup(DATABASE)
    from django.contrib.auth import get_user_model

    admin, _ = get_user_model().objects.get_or_create(username="bench-admin", defaults={"is_staff": True})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "trl.jsonl"
        started = time.perf_counter()
        duplicates = write_file(path, args.records)
        size = path.stat().st_size
        print(f"{args.records} records, {size / 2**20:.0f} MiB, in {time.perf_counter() - started:.0f} s", flush=True)
        concord = concord_import(path, admin)
        print("concord", concord, flush=True)
        assert concord["duplicates"] == duplicates, (concord, duplicates)
        naive = naive_import(path, admin, args.naive_sample)
        print("naive", naive, flush=True)
    body = report(args, size, concord, naive)
    print(body)
    if not args.no_write:
        write_section("Importing a large TRL file", body)
    drop_database(url)  # a million items take gigabytes on a disk that other databases share


def report(args: argparse.Namespace, size: int, concord: dict[str, Any], naive: dict[str, Any]) -> str:
    ours, theirs = concord["records"] / concord["seconds"], naive["records"] / naive["seconds"]
    command = "`.venv/bin/python bench/import_scale.py" + (
        f" --records {args.records}`" if args.records != 100_000 else "`"
    )
    return f"""
A TRL JSON lines file of {args.records:,} preference rows ({size / 2**20:,.0f} MiB: prompts of 100-500 characters,
responses of 200-900, a fifth as chat messages, one row in {DUPLICATE_EVERY} a repeat) imported into a fresh
project, PostgreSQL on the same machine ({machine()}).

| import | records | time | throughput |
| --- | --- | --- | --- |
| Concord `item_import` (the worker's service: streaming parse, binary COPY of each chunk into a staging table \
and one INSERT ... SELECT ... ON CONFLICT DO NOTHING on a second thread, all in one transaction) \
| {concord["records"]:,} ({concord["items"]:,} items, {concord["duplicates"]:,} duplicates skipped) \
| {concord["seconds"]:.1f} s | {ours:,.0f} records/s |
| Naive: json.loads, exists() on the content hash, `Item.objects.create`, a record at a time (first \
{naive["records"]:,} records, extrapolated) | {naive["records"]:,} | {naive["seconds"]:.1f} s \
({args.records / theirs:,.0f} s for all) | {theirs:,.0f} records/s |

Concord is **{ours / theirs:.1f}x** as fast as the naive loop.
{cpu_note(concord)}
Command: {command}
"""


def cpu_note(concord: dict[str, Any]) -> str:
    """Where the time went: Python's and PostgreSQL's CPU per record, which bound the rate on an idle machine."""
    python = 1e6 * concord["python_cpu"] / concord["records"]
    note = f"\nCPU per record during Concord's import: Python {python:.0f} µs (reading, parsing, hashing, rows)"
    if concord["database_cpu"] is not None:
        database = 1e6 * concord["database_cpu"] / concord["records"]
        note += (
            f", PostgreSQL {database:.0f} µs (COPY, the INSERT with its unique check, indexes and foreign-key "
            f"checks). The two run on a core each, so the slower bounds an otherwise idle machine at about "
            f"{1e6 / max(python, database):,.0f} records/s"
        )
    return note + f"; the load average during the import was {concord['load']:.1f}.\n"


if __name__ == "__main__":
    main()
