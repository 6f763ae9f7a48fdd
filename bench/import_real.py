"""Import the real data sets in ../shared/data, check their counts against what their SOURCE.txt says, and time
the import and both exports. Writes a section of docs/benchmarks.md.

    .venv/bin/python bench/import_real.py [--data ../shared/data]
"""

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import django_setup, machine, write_section

# (format, file under the data folder, what SOURCE.txt says we should get)
FILES = [
    ("hh-rlhf", "hh-rlhf/harmless-base/test.jsonl.gz", "2312 pairs"),
    ("finegrainedrlhf", "finegrainedrlhf-qa-feedback/dev_feedback.json", "500 questions, 3000 preferences"),
    ("pandalm", "pandalm-testset/testset-v1.json", "999 pairs, 3 annotators each"),
    ("oasst", "oasst-en-100-sample/en_100_tree.jsonl", "212 ranking groups"),
]


def import_one(fmt: str, path: Path) -> dict[str, object]:
    from django.contrib.auth import get_user_model

    from annotate.models import Annotation, ImportBatch, ItemGroup, Project
    from annotate.services.exports import items_export
    from annotate.services.imports import import_batch_create, item_import
    from annotate.services.projects import project_create

    Project.objects.filter(name=f"bench-real-{fmt}").delete()
    admin, _ = get_user_model().objects.get_or_create(username="bench-admin")
    project = project_create(name=f"bench-real-{fmt}", overlap=1, created_by=admin)
    batch = import_batch_create(project=project, created_by=admin, file_name=path.name, format=fmt, seed=1)
    start = time.perf_counter()
    batch = item_import(batch=batch, path=path)
    seconds = time.perf_counter() - start
    assert batch.status == ImportBatch.Status.DONE, batch.error
    annotations = Annotation.objects.filter(item__project=project)
    spans = Counter(s["category"] for spans in annotations.values_list("spans", flat=True) for s in spans)
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        items_export(project=project, path=Path(folder) / "items.parquet", format="parquet")
        parquet_seconds = time.perf_counter() - start
        start = time.perf_counter()
        pairs = trl_pairs(project, Path(folder) / "pairs.jsonl")
        pairs_seconds = time.perf_counter() - start
    row = {
        "groups": ItemGroup.objects.filter(project=project).count(),
        "items": batch.items_created,
        "annotations": annotations.count(),
        "spans": sum(spans.values()),
        "import_s": seconds,
        "records_per_s": batch.records_read / seconds,
        "parquet_s": parquet_seconds,
        "pairs": pairs,
        "pairs_s": pairs_seconds,
    }
    project.delete()
    return row


def trl_pairs(project, path: Path) -> int:  # type: ignore[no-untyped-def]
    """Freeze a version of the project's labels under the default filters, then export it as TRL pairs."""
    from curation.services.version_exports import version_export_file
    from curation.services.versions import dataset_version_create, dataset_version_freeze

    draft = dataset_version_create(name="bench", projects=[project], filters={}, created_by=None)
    version = dataset_version_freeze(version=draft)
    rows = version_export_file(version=version, format="trl", path=path)
    version.delete()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared/data")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    django_setup()
    lines = [
        f"Each real file imported into a fresh project (overlap 1, pair mode all), on {machine()}; then exported "
        "whole as Parquet (fine-grained), and as TRL pairs: a version frozen under the default filters (items whose "
        "imported labels agree; disputed ones stay out), then exported.",
        "",
        "| file | SOURCE.txt | groups | items | imported annotations | error spans | import | Parquet export "
        "| TRL pairs |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fmt, relative, expected in FILES:
        r = import_one(fmt, args.data / relative)
        lines.append(
            f"| {relative} | {expected} | {r['groups']} | {r['items']} | {r['annotations']} | {r['spans']} "
            f"| {r['import_s']:.1f} s ({r['records_per_s']:.0f} records/s) | {r['parquet_s']:.1f} s "
            f"| {r['pairs']} in {r['pairs_s']:.1f} s |"
        )
        print(lines[-1], flush=True)
    lines += ["", "Command: `.venv/bin/python bench/import_real.py`"]
    if not args.no_write:
        write_section("Importing the real data sets", "\n".join(lines))


if __name__ == "__main__":
    main()
