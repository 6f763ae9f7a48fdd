"""Exporting a large frozen dataset version as TRL pairwise JSON lines: Concord's streaming export against a
naive ORM loop, on the same rows, in the same run.

The rows are bulk-inserted (COPY) straight into a frozen version of a benchmark database of their own (kept between
runs: a second run with the same --rows reuses them). Each export runs in a child process of its own, so that
its peak RSS (resource.getrusage) is its own. Concord's export (curation.services.version_exports) streams
the rows in position order with a server-side cursor a chunk at a time; the naive loop is
`for row in DatasetRow.objects.filter(version=v): f.write(json.dumps({...}))`, which Django evaluates whole.

    .venv/bin/python bench/export_version.py --rows 1000000
"""

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import django_setup, machine, write_section

DATABASE = "concord_bench_versions"
INSERT_BATCH = 5000
WORDS = [
    "the",
    "model",
    "answer",
    "should",
    "explain",
    "clearly",
    "why",
    "each",
    "step",
    "follows",
    "from",
    "the",
    "previous",
    "one",
]


def text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def build_version(rows: int):  # type: ignore[no-untyped-def]
    from django.utils import timezone

    from annotate.models import Project
    from curation.models import DatasetVersion

    name = f"bench-export-{rows}"
    project, _ = Project.objects.get_or_create(name="bench-export-version")
    version = DatasetVersion.objects.filter(name=name, status="frozen").first()
    if version is not None and version.rows.count() == rows:
        return version
    # One benchmark version at a time: the rows of other sizes go, so the database stays as small as it can.
    DatasetVersion.objects.filter(name__startswith="bench-export-").delete()
    version = DatasetVersion.objects.create(name=name, status="frozen", frozen_at=timezone.now(), row_count=rows)
    version.projects.add(project)
    insert_rows(version, rows)
    return version


def insert_rows(version, rows: int) -> None:  # type: ignore[no-untyped-def]
    """Bulk insert with PostgreSQL's COPY, INSERT_BATCH rows a transaction (bulk_create managed about 2,000
    rows/s here, which made a million rows take most of ten minutes)."""
    from django.db import connection, transaction

    from curation.models import DatasetRow

    rng = random.Random(0)
    started = time.perf_counter()
    columns = ("version_id", *DatasetRow.CONTENT_FIELDS)
    statement = f"COPY {DatasetRow._meta.db_table} ({', '.join(columns)}) FROM STDIN"
    for start in range(0, rows, INSERT_BATCH):
        with transaction.atomic(), connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
            for position in range(start, min(rows, start + INSERT_BATCH)):
                copy.write_row(_row(version.pk, position, rng))
        if start and start % 100_000 == 0:
            print(f"  {start} rows inserted ({time.perf_counter() - started:.0f} s)", flush=True)


def _row(version_id: int, position: int, rng: random.Random) -> tuple[object, ...]:
    strength = rng.choice([-3, -2, -1, 1, 2, 3])
    labels = {"chosen": {"ratings": {"helpfulness": 3.0}, "spans": [], "missing": []}, "rejected": {}}
    return (
        version_id,
        position,
        position + 1,
        rng.choices(["train", "validation", "test"], [8, 1, 1])[0],
        json.dumps([{"role": "user", "content": f"Question {position}: " + text(rng, 25)}]),
        "",
        text(rng, 70),
        text(rng, 60),
        abs(strength) / 3,
        1.0,
        "human_consensus",
        "bench",
        json.dumps([3 * position, 3 * position + 1, 3 * position + 2]),
        json.dumps(labels),
    )


def naive_export(version, path: Path) -> int:  # type: ignore[no-untyped-def]
    """What an export written without thought for size does: the whole queryset, full model instances."""
    from curation.models import DatasetRow

    count = 0
    with path.open("w", encoding="utf-8") as f:
        for row in DatasetRow.objects.filter(version=version):
            record = {
                "prompt": row.prompt,
                "chosen": [{"role": "assistant", "content": row.chosen}],
                "rejected": [{"role": "assistant", "content": row.rejected}],
                "margin": row.margin,
                "split": row.split,
            }
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


def child(kind: str, version_id: int, out: Path) -> None:
    """Run one export in this (child) process and print its figures as JSON."""
    django_setup(DATABASE)
    from curation.models import DatasetVersion
    from curation.services.version_exports import version_export

    version = DatasetVersion.objects.get(pk=version_id)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    rows = version_export(version=version, format="trl", path=out) if kind == "service" else naive_export(version, out)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures = {"rows": rows, "seconds": seconds, "peak_mb": peak / 1024, "baseline_mb": before / 1024}
    print(json.dumps({**figures, "bytes": out.stat().st_size}))


def run_child(kind: str, version_id: int, folder: Path) -> dict[str, float]:
    out = folder / f"{kind}.jsonl"
    command = [sys.executable, __file__, "--child", kind, "--version", str(version_id), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    out.unlink()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", choices=["service", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--version", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.version, args.out)
        return
    django_setup(DATABASE)
    started = time.perf_counter()
    version = build_version(args.rows)
    print(f"version {version.pk}: {args.rows} rows ready in {time.perf_counter() - started:.0f} s", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        service = run_child("service", version.pk, Path(folder))
        print("service", service, flush=True)
        naive = run_child("naive", version.pk, Path(folder))
        print("naive", naive, flush=True)
    report(args.rows, service, naive)


def report(rows: int, service: dict[str, float], naive: dict[str, float]) -> None:
    def line(name: str, f: dict[str, float]) -> str:
        rate = f["rows"] / f["seconds"]
        return f"| {name} | {f['seconds']:.1f} s | {rate:,.0f} rows/s | {f['peak_mb']:,.0f} MiB |"

    body = f"""
TRL pairwise JSON lines export of a frozen dataset version of {rows:,} rows ({service["bytes"] / 2**20:,.0f} MiB
of output), each export in a child process of its own, PostgreSQL on the same machine ({machine()}).

| export | time | throughput | peak RSS |
| --- | --- | --- | --- |
{line("Concord `version_export` (server-side cursor, 2,000-row chunks, prompt JSON as stored)", service)}
{line("Naive ORM loop (`for row in DatasetRow.objects.filter(version=v)`)", naive)}

Concord is **{naive["seconds"] / service["seconds"]:.1f}x** as fast and peaks at
**{naive["peak_mb"] / service["peak_mb"]:.1f}x** less memory (a process with Django loaded starts at about
{service["baseline_mb"]:.0f} MiB).

Command: `.venv/bin/python bench/export_version.py --rows {rows}`
"""
    write_section("Exporting a large dataset version", body)
    print(body)


if __name__ == "__main__":
    main()
