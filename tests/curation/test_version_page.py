"""A dataset version's page shows its filters, manifest and stats as tables and its strength histogram as a
chart with labelled axes; its exports download under names that say the version once, and the Parquet export
holds its splits as `datasets` loads them."""

import io
import re
import zipfile

import pyarrow.parquet as pq
import pytest
from django.urls import reverse

from annotate.models import Role
from curation.models import ExportJob
from curation.services.version_exports import export_job_create, export_job_run
from curation.services.versions import dataset_version_create, dataset_version_freeze
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member

SPLITS = ("train", "validation", "test")


@pytest.fixture(autouse=True)
def media(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.MEDIA_ROOT


def frozen(project, *, items=12, name="helpful", **filters):  # type: ignore[no-untyped-def]
    for n in range(items):
        item = ItemFactory(project=project, source="web")
        AnnotationFactory(item=item, strength=-3 if n % 3 else 1)
        AnnotationFactory(item=item, strength=-2 if n % 3 else 2)
    filters = {"splits": {"train": 0.5, "validation": 0.25, "test": 0.25}, "seed": 7, **filters}
    version = dataset_version_create(name=name, projects=[project], filters=filters, created_by=None)
    return dataset_version_freeze(version=version)


def table_rows(html: str, testid: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The (th, td) pairs of the table with this data-testid, tags stripped."""
    table = html[html.index(f'data-testid="{testid}"') :]
    table = table[: table.index("</table>")]
    pairs = re.findall(r"<th scope=\"row\">(.*?)</th><td>(.*?)</td>", table, re.S)
    return {re.sub(r"<.*?>", "", k).strip(): re.sub(r"<.*?>", "", v).strip() for k, v in pairs}


def export(version, fmt):  # type: ignore[no-untyped-def]
    return export_job_run(job=export_job_create(version=version, format=fmt, created_by=None))


@pytest.mark.django_db
def test_the_page_shows_filters_manifest_and_stats_as_tables(login):  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    version = frozen(project, min_agreement=0.5, consensus="weighted")
    html = (
        login(member(project, Role.CURATOR))
        .get(reverse("curation:version_detail", args=[project.pk, version.pk]))
        .content.decode()
    )
    filters = table_rows(html, "filters-table")
    assert filters["States"] == "Agreed, Adjudicated"
    assert filters["Consensus rule"].startswith("Annotator-weighted mean")
    assert filters["Minimum agreement"] == "0.5"
    assert filters["Split"] == "Train 0.5 · Validation 0.25 · Test 0.25"
    assert filters["Seed"] == "7"
    manifest = table_rows(html, "manifest-table")
    assert manifest["Projects"] == project.name
    assert manifest["Rows"] == "12"
    assert manifest["Rows by state"] == "Agreed 12"
    assert manifest["Content hash"] == version.content_hash
    stats = table_rows(html, "stats-table")
    assert stats["Rows"] == "12"
    assert sum(int(stats[f"{s.title()} split"]) for s in SPLITS) == 12
    assert stats["Human consensus"] == "12"
    assert "{" not in html[html.index('data-testid="filters-table"') : html.index("First rows")]  # no dicts


@pytest.mark.django_db
def test_the_strength_histogram_has_labelled_axes_and_a_bar_per_tenth(login):  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    version = frozen(project)
    html = (
        login(member(project, Role.CURATOR))
        .get(reverse("curation:version_detail", args=[project.pk, version.pk]))
        .content.decode()
    )
    svg = html[html.index('<svg id="strength-histogram"') : html.index("</svg>")]
    assert svg.count('<rect class="bar"') == 10
    assert "Margin towards the chosen response" in svg
    assert ">Rows</text>" in svg
    counts = [int(n) for n in re.findall(r": (\d+) rows</title></rect>", svg)]
    assert counts == [b["count"] for b in version.stats["margin_histogram"]]
    heights = [
        float(h) for h in re.findall(r'<rect class="bar" x="[\d.]+" y="[\d.]+" width="[\d.]+" height="([\d.]+)"', svg)
    ]
    assert max(heights) == 138
    assert heights.index(max(heights)) == counts.index(max(counts))
    assert f">{max(counts)}</text>" in svg  # the y axis names its top


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "fmt", "expected"),
    [
        ("helpful", "trl", "helpful-v{pk}-trl.jsonl"),
        ("helpful v2", "trl", "helpful-v2-trl.jsonl"),
        ("rm-v3", "csv", "rm-v3.csv"),
        ("rm_V1.1", "fine", "rm_V1.1-fine-grained.jsonl"),
        ("review", "parquet", "review-v{pk}.parquet.zip"),
    ],
)
def test_export_file_names_say_the_version_once(login, name, fmt, expected):  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    version = frozen(project, items=3, name=name)
    job = export(version, fmt)
    response = login(member(project, Role.CURATOR)).get(
        reverse("curation:export_download", args=[project.pk, version.pk, job.pk])
    )
    assert response.status_code == 200
    filename = expected.format(pk=version.pk)
    assert response["Content-Disposition"] == f'attachment; filename="{filename}"'
    assert len(re.findall(r"v\d", filename, re.I)) == 1


@pytest.mark.django_db
def test_the_parquet_export_holds_a_file_per_split(login):  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    version = frozen(project)
    job = export(version, "parquet")
    assert job.status == ExportJob.Status.DONE
    filled = [s for s in SPLITS if version.stats["split"][s]]
    assert len(filled) >= 2  # 12 prompts over 0.5 / 0.25 / 0.25: more than one split
    with zipfile.ZipFile(job.file.path) as archive:
        assert sorted(archive.namelist()) == sorted(f"{s}.parquet" for s in filled)
        tables = {s: pq.read_table(io.BytesIO(archive.read(f"{s}.parquet"))) for s in filled}
    assert {s: t.num_rows for s, t in tables.items()} == {s: version.stats["split"][s] for s in filled}
    for split, table in tables.items():
        assert set(table.column("split").to_pylist()) <= {split}
        positions = table.column("position").to_pylist()
        assert positions == sorted(positions)


@pytest.fixture
def offline_datasets(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    return datasets


@pytest.mark.django_db
def test_datasets_loads_the_parquet_export_as_splits(offline_datasets, tmp_path):  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    version = frozen(project)
    folder = tmp_path / "unzipped"
    zipfile.ZipFile(export(version, "parquet").file.path).extractall(folder)
    loaded = offline_datasets.load_dataset("parquet", data_dir=str(folder), cache_dir=str(tmp_path / "cache"))
    filled = {s: n for s, n in version.stats["split"].items() if n}
    assert {s: loaded[s].num_rows for s in loaded} == filled
    assert len(filled) >= 2
    for split in loaded:
        assert set(loaded[split]["split"]) == {split}
    assert loaded["train"][0]["chosen"][0]["role"] == "assistant"


@pytest.mark.django_db
def test_a_split_without_rows_has_no_file_and_the_others_still_load(offline_datasets, tmp_path):  # type: ignore[no-untyped-def]
    """`datasets` refuses a split with no rows ("corresponds to no data"), so the zip leaves such a split out."""
    project = ProjectFactory(overlap=2)
    version = frozen(project, items=4, splits={"train": 1.0, "validation": 0.0, "test": 0.0})
    archive = zipfile.ZipFile(export(version, "parquet").file.path)
    assert archive.namelist() == ["train.parquet"]
    archive.extractall(tmp_path / "unzipped")
    loaded = offline_datasets.load_dataset(
        "parquet", data_dir=str(tmp_path / "unzipped"), cache_dir=str(tmp_path / "c")
    )
    assert list(loaded) == ["train"]
    assert loaded["train"].num_rows == 4
