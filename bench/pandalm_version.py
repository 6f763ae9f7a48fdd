"""The curation path on real data: PandaLM's test set imported, one disputed item adjudicated, a version frozen
and exported in all four formats, the Parquet loaded with Hugging Face `datasets`, then an annotation changed to
show the frozen version and its hash stay as they were. Writes a section of docs/benchmarks.md.

    .venv/bin/python bench/pandalm_version.py [--data ../shared/data]
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import django_setup, machine, write_section

PROJECT = "bench-version-pandalm"
FORMATS = ("trl", "parquet", "fine", "csv")


def _imported_project(path: Path):  # type: ignore[no-untyped-def]
    from django.contrib.auth import get_user_model

    from annotate.models import ImportBatch, Project
    from annotate.services.imports import import_batch_create, item_import
    from annotate.services.projects import project_create

    Project.objects.filter(name=PROJECT).delete()
    curator, _ = get_user_model().objects.get_or_create(username="bench-curator")
    project = project_create(name=PROJECT, overlap=3, created_by=curator)
    batch = import_batch_create(project=project, created_by=curator, file_name=path.name, format="pandalm", seed=1)
    assert item_import(batch=batch, path=path).status == ImportBatch.Status.DONE
    return project, curator


def _exports(version, folder: Path) -> dict[str, tuple[int, float]]:  # type: ignore[no-untyped-def]
    from curation.services.version_exports import version_export

    done = {}
    for fmt in FORMATS:
        start = time.perf_counter()
        rows = version_export(version=version, format=fmt, path=folder / f"version.{fmt}")
        done[fmt] = (rows, time.perf_counter() - start)
    return done


def run(path: Path) -> dict[str, object]:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from datasets import load_dataset

    from annotate.models import Annotation
    from annotate.services.label_summary import project_label_summaries_refresh
    from curation.selectors_review import disagreement_queue
    from curation.services.adjudication import adjudication_record
    from curation.services.versions import dataset_version_content_hash, dataset_version_create, dataset_version_freeze

    project, curator = _imported_project(path)
    try:
        disputed = disagreement_queue(project=project, reason="sign").first()
        item = project.items.get(pk=disputed["id"])
        adjudication_record(item=item, curator=curator, decision="label", strength=1, reason="B answers the task")
        draft = dataset_version_create(name="PandaLM v1", projects=[project], filters={}, created_by=curator)
        version = dataset_version_freeze(version=draft)
        with tempfile.TemporaryDirectory() as folder:
            exports = _exports(version, Path(folder))
            cache = Path(folder) / "hf-cache"
            loaded = load_dataset("parquet", data_files=str(Path(folder) / "version.parquet"), cache_dir=str(cache))
        # Labels edited after the freeze (their summaries kept in step): the frozen version must not notice.
        Annotation.objects.filter(item__project=project).update(strength=0)
        project_label_summaries_refresh(project_id=project.pk)
        version.refresh_from_db()
        return {
            "rows": version.row_count,
            "stats": version.stats,
            "exports": exports,
            "loaded": loaded["train"].num_rows,
            "columns": loaded["train"].column_names,
            "hash_before": version.content_hash,
            "hash_after": dataset_version_content_hash(version=version),
        }
    finally:
        project.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared/data")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    django_setup()
    r = run(args.data / "pandalm-testset/testset-v1.json")
    exports = r["exports"]
    assert isinstance(exports, dict)
    lines = [
        f"PandaLM's test set imported (999 items, 3 annotators each), one disputed item adjudicated, and a version "
        f"frozen with the default filters on {machine()}: {r['rows']} rows.",
        "",
        "| format | rows | seconds |",
        "| --- | --- | --- |",
        *[f"| {fmt} | {rows} | {seconds:.2f} |" for fmt, (rows, seconds) in exports.items()],
        "",
        f"`datasets.load_dataset('parquet', ...)` read {r['loaded']} rows with columns {', '.join(r['columns'])}.",  # type: ignore[arg-type]
        f"After every annotation of the project was changed, the frozen version's hash was "
        f"{'unchanged' if r['hash_before'] == r['hash_after'] else 'CHANGED'} ({str(r['hash_before'])[:16]}…).",
        "",
        "Command: `.venv/bin/python bench/pandalm_version.py`",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("A frozen version of PandaLM, in four formats", "\n".join(lines))


if __name__ == "__main__":
    main()
