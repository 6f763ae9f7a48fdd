"""Exporting a large frozen dataset version as TRL pairwise JSON lines and as Parquet: Concord's streaming export
against a naive ORM loop, on the same rows, in the same run.

The rows are bulk-inserted (COPY) straight into a frozen version of a benchmark database of their own (kept between
runs: a second run with the same --rows reuses them). Each export runs in a child process of its own, so that
its peak RSS (resource.getrusage) is its own. Concord's export (curation.services.version_exports) reads the rows
in position order a chunk at a time, one index range scan each, and writes each chunk with one call (TRL: the
chunk's lines joined; Parquet: one row group built column by column). The naive loop is
`for row in DatasetRow.objects.filter(version=v): ...`, which Django evaluates whole: TRL writes json.dumps of
each row, Parquet makes a dict of each row and an Arrow table of every 10,000 (pa.Table.from_pylist).

    .venv/bin/python bench/export_version.py --rows 1000000
"""

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import django_setup, filler_text, machine, write_section

DATABASE = "concord_bench_versions"
# Measured in the same session with the code before issue 11 (commit 369411a): a server-side cursor Django holds
# across transactions, TRL lines written one at a time, Parquet built row by row with pa.Table.from_pylist.
BEFORE = (
    "Before (commit 369411a), the same million rows took 21 to 40 s as TRL (25,000 to 47,000 rows/s, 14 to 19 s "
    "of CPU) and 48 to 74 s as Parquet (14,000 to 21,000 rows/s, 37 to 55 s of CPU) over runs at load averages of 2 "
    "to 4."
)
INSERT_BATCH = 5000


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
        json.dumps([{"role": "user", "content": f"Question {position}: " + filler_text(rng, 25)}]),
        "",
        filler_text(rng, 70),
        filler_text(rng, 60),
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


def naive_parquet(version, path: Path) -> int:  # type: ignore[no-untyped-def]
    """The same loop to Parquet: a dict of each row in the export's shape, an Arrow table of every 10,000."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from curation.models import DatasetRow
    from curation.services.version_parquet import SCHEMA

    count, pending = 0, []
    with pq.ParquetWriter(path, SCHEMA, compression="zstd") as writer:
        for row in DatasetRow.objects.filter(version=version):
            record = {name: getattr(row, name) for name in DatasetRow.CONTENT_FIELDS}
            record["prompt"] = [{"role": t.get("role"), "content": t.get("content")} for t in row.prompt]
            record["chosen"] = [{"role": "assistant", "content": row.chosen}]
            record["rejected"] = [{"role": "assistant", "content": row.rejected}]
            record["labels"] = json.dumps(row.labels, ensure_ascii=False, sort_keys=True)
            pending.append(record)
            count += 1
            if len(pending) == 10_000:
                writer.write_table(pa.Table.from_pylist(pending, schema=SCHEMA))
                pending = []
        if pending:
            writer.write_table(pa.Table.from_pylist(pending, schema=SCHEMA))
    return count


KINDS = {
    "trl": ("trl", "jsonl"),
    "naive-trl": ("trl", "jsonl"),
    "parquet": ("parquet", "parquet"),
    # What a download job writes: a zip of one Parquet file per split (version_parquet.splits_write).
    "parquet-splits": ("parquet", "parquet.zip"),
    "naive-parquet": ("parquet", "parquet"),
}


def child(kind: str, version_id: int, out: Path) -> None:
    """Run one export in this (child) process and print its figures as JSON: wall clock, CPU of this process
    (its threads included), peak RSS, and the machine's load average at the end."""
    django_setup(DATABASE)
    from curation.models import DatasetVersion
    from curation.services.version_exports import version_export

    version = DatasetVersion.objects.get(pk=version_id)
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    if kind.startswith("naive"):
        rows = naive_export(version, out) if kind == "naive-trl" else naive_parquet(version, out)
    else:
        rows = version_export(version=version, format=KINDS[kind][0], path=out)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    figures = {"rows": rows, "seconds": seconds, "cpu": cpu, "load": os.getloadavg()[0]}
    figures |= {"peak_mb": after.ru_maxrss / 1024, "baseline_mb": before.ru_maxrss / 1024}
    print(json.dumps({**figures, "bytes": out.stat().st_size}))


def run_child(kind: str, version_id: int, folder: Path) -> dict[str, float]:
    out = folder / f"{kind}.{KINDS[kind][1]}"
    command = [sys.executable, __file__, "--child", kind, "--version", str(version_id), "--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    figures: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    out.unlink()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", choices=list(KINDS), help=argparse.SUPPRESS)
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
    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        for kind in KINDS:
            figures[kind] = run_child(kind, version.pk, Path(folder))
            print(kind, figures[kind], flush=True)
    report(args.rows, figures)


def report(rows: int, figures: dict[str, dict[str, float]]) -> None:
    def line(name: str, f: dict[str, float]) -> str:
        rate = f["rows"] / f["seconds"]
        cpu, load = f"{f['cpu']:.1f} s", f"{f['load']:.1f}"
        return f"| {name} | {f['seconds']:.1f} s | **{rate:,.0f} rows/s** | {cpu} | {f['peak_mb']:,.0f} MiB | {load} |"

    def ratio(fast: str, slow: str) -> str:
        speed = figures[slow]["seconds"] / figures[fast]["seconds"]
        memory = figures[slow]["peak_mb"] / figures[fast]["peak_mb"]
        return f"**{speed:.1f}x** as fast, **{memory:.1f}x** less memory"

    trl, parquet = figures["trl"], figures["parquet"]
    body = f"""
A frozen dataset version of {rows:,} rows exported as TRL pairwise JSON lines ({trl["bytes"] / 2**20:,.0f} MiB)
and as Parquet ({parquet["bytes"] / 2**20:,.0f} MiB, zstd), each export in a child process of its own, PostgreSQL
on the same machine ({machine()}). CPU: the exporting process's, its threads included; load: the machine's load
average as the export ended (other work on the machine included).

| export | time | throughput | CPU | peak RSS | load |
| --- | --- | --- | --- | --- | --- |
{line("Concord TRL (`version_export`: 2,000 rows a query, read a chunk ahead, responses escaped by PostgreSQL)", trl)}
{line("Naive ORM loop to TRL (`for row in DatasetRow.objects.filter(version=v)`)", figures["naive-trl"])}
{line("Concord Parquet (10,000 rows a query and a row group, built column by column, compressed in a thread)", parquet)}
{line("Concord Parquet, a zip of a file per split (what a download job writes)", figures["parquet-splits"])}
{line("Naive ORM loop to Parquet (a dict per row, `pa.Table.from_pylist` per 10,000)", figures["naive-parquet"])}

TRL: {ratio("trl", "naive-trl")}. Parquet: {ratio("parquet", "naive-parquet")}; Concord's Parquet export runs
at {parquet["rows"] / parquet["seconds"] / (trl["rows"] / trl["seconds"]):.2f}x the rate of its TRL export. A
process with Django loaded starts at about {trl["baseline_mb"]:.0f} MiB.

{BEFORE}

Command: `.venv/bin/python bench/export_version.py --rows {rows}`
"""
    write_section("Exporting a large dataset version", body)
    print(body)


if __name__ == "__main__":
    main()
