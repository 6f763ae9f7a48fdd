"""Agreement on PandaLM's human test set, three annotators per pair: imported into a scratch project (in the
benchmark database), read back with curation.selectors_quality and measured with curation.metrics. Checks the
figures SOURCE.txt gives (mean pairwise agreement 0.920, Fleiss' kappa 0.864) and Krippendorff's alpha against
the krippendorff package. Writes a section of docs/benchmarks.md.

    .venv/bin/python bench/agreement_real.py [--data ../shared/data]
"""

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import django_setup, machine, write_section

PROJECT = "bench-agreement-pandalm"


def _queue_check(project, table, signs) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """The disagreement queue must list exactly the items where someone preferred A and someone B."""
    import numpy as np

    from curation.selectors_review import disagreement_queue

    split = {item_id for item_id, row in zip(table.item_ids, signs, strict=True) if np.nanmin(row) < 0 < np.nanmax(row)}
    start = time.perf_counter()
    queued = {row["id"] for row in disagreement_queue(project=project, reason="sign")}
    seconds = time.perf_counter() - start
    whole_queue = disagreement_queue(project=project).count()
    return {
        "split": float(len(split)),
        "queued": float(len(queued)),
        "queue_exact": float(queued == split),
        "queue_all": float(whole_queue),
        "queue_seconds": seconds,
    }


def measure(path: Path) -> dict[str, float]:
    import krippendorff
    import numpy as np
    from django.contrib.auth import get_user_model

    from annotate.models import ImportBatch, Project
    from annotate.services.imports import import_batch_create, item_import
    from annotate.services.projects import project_create
    from curation.aggregation import sign_dawid_skene
    from curation.metrics import fleiss_kappa, krippendorff_alpha, pairwise_agreement
    from curation.selectors_quality import label_table, quality_report

    Project.objects.filter(name=PROJECT).delete()
    admin, _ = get_user_model().objects.get_or_create(username="bench-admin")
    project = project_create(name=PROJECT, overlap=3, created_by=admin)
    try:
        batch = import_batch_create(project=project, created_by=admin, file_name=path.name, format="pandalm", seed=1)
        batch = item_import(batch=batch, path=path)
        assert batch.status == ImportBatch.Status.DONE, batch.error
        start = time.perf_counter()
        table = label_table(project=project)
        signs = np.sign(table.matrix)
        result = {
            "items": float(len(table.item_ids)),
            "annotators": float(len(table.annotator_ids)),
            "pairwise": pairwise_agreement(signs),
            "unanimous": float((np.nanmin(signs, axis=1) == np.nanmax(signs, axis=1)).sum()),
            "fleiss": fleiss_kappa(signs),
            "alpha": krippendorff_alpha(signs, "nominal"),
            "alpha_seconds": time.perf_counter() - start,
            "alpha_package": float(krippendorff.alpha(reliability_data=signs.T, level_of_measurement="nominal")),
        }
        units, coders = len(table.item_ids), len(table.annotator_ids)
        triples = (table.row_item, table.row_annotator, table.strength)
        reliability = sign_dawid_skene(*triples, units=units, coders=coders).reliability
        result["ds_min"], result["ds_max"] = float(reliability.min()), float(reliability.max())
        start = time.perf_counter()
        quality_report(project=project)
        result["report_seconds"] = time.perf_counter() - start
        result.update(_queue_check(project, table, signs))
        return result
    finally:
        project.delete()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parent.parent.parent / "shared/data")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    django_setup()
    r = measure(args.data / "pandalm-testset/testset-v1.json")
    lines = [
        f"PandaLM's test set (pandalm-testset/testset-v1.json) imported into a scratch project, then read back "
        f"with `curation.selectors_quality.label_table` and measured on the preferred side (A, B or tie) of "
        f"{r['items']:.0f} items by {r['annotators']:.0f} annotators, on {machine()}.",
        "",
        "| measure | Concord | expected |",
        "| --- | --- | --- |",
        f"| mean pairwise agreement | {r['pairwise']:.3f} | 0.920 (SOURCE.txt) |",
        f"| unanimous items | {r['unanimous']:.0f} | 879 (SOURCE.txt) |",
        f"| Fleiss' kappa | {r['fleiss']:.3f} | 0.864 (SOURCE.txt) |",
        f"| Krippendorff's alpha, nominal | {r['alpha']:.6f} | {r['alpha_package']:.6f} (krippendorff 0.9.0) |",
        f"| Dawid-Skene reliability per annotator | {r['ds_min']:.3f} to {r['ds_max']:.3f} | |",
        "",
        f"Disagreement queue, sign-split filter: {r['queued']:.0f} items; items where one annotator preferred A "
        f"and another B: {r['split']:.0f}; the same items: {'yes' if r['queue_exact'] else 'NO'} "
        f"({r['queue_seconds']:.2f} s). The whole queue (disputes: sign splits, strength or rating spreads over 2; "
        f"open flags): {r['queue_all']:.0f} items.",
        "",
        f"Reading the labels and computing the metrics took {r['alpha_seconds']:.2f} s; the whole annotator-quality "
        f"report {r['report_seconds']:.2f} s.",
        "",
        "Command: `.venv/bin/python bench/agreement_real.py`",
    ]
    print("\n".join(lines))
    if not args.no_write:
        write_section("Agreement on PandaLM's test set", "\n".join(lines))


if __name__ == "__main__":
    main()
