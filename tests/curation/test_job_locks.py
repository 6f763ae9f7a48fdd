"""Long jobs (freezes, exports) survive a killed worker: the next delivery runs them, a live one is left alone."""

import pytest

from concord import locks
from curation.models import DatasetVersion, ExportJob
from curation.services.version_exports import export_job_create, export_job_run
from curation.services.versions import VersionError, dataset_version_create, dataset_version_freeze
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory
from tests.locks import held_by_a_live_worker


def agreed_project():  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    for _ in range(3):
        item = ItemFactory(project=project)
        AnnotationFactory(item=item, strength=-2)
        AnnotationFactory(item=item, strength=-1)
    return project


def draft(project):  # type: ignore[no-untyped-def]
    return dataset_version_create(name="v", projects=[project], filters={}, created_by=None)


@pytest.mark.django_db
def test_a_version_left_freezing_by_a_killed_worker_is_frozen_on_redelivery() -> None:
    version = draft(agreed_project())
    DatasetVersion.objects.filter(pk=version.pk).update(status=DatasetVersion.Status.FREEZING, row_count=1)
    frozen = dataset_version_freeze(version=DatasetVersion.objects.get(pk=version.pk))
    assert (frozen.status, frozen.row_count) == (DatasetVersion.Status.FROZEN, 3)


@pytest.mark.django_db
def test_an_export_left_running_by_a_killed_worker_is_run_on_redelivery(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path
    version = dataset_version_freeze(version=draft(agreed_project()))
    job = export_job_create(version=version, format="trl", created_by=None)
    ExportJob.objects.filter(pk=job.pk).update(status=ExportJob.Status.RUNNING, rows_done=1)
    done = export_job_run(job=ExportJob.objects.get(pk=job.pk))
    assert (done.status, done.rows_done) == (ExportJob.Status.DONE, 3)


@pytest.mark.django_db(transaction=True)
def test_a_second_delivery_leaves_a_live_freeze_alone() -> None:
    version = draft(agreed_project())
    DatasetVersion.objects.filter(pk=version.pk).update(status=DatasetVersion.Status.FREEZING)
    with held_by_a_live_worker((locks.FREEZE, version.pk)):
        with pytest.raises(VersionError, match="being frozen by another worker"):
            dataset_version_freeze(version=DatasetVersion.objects.get(pk=version.pk))
        assert DatasetVersion.objects.get(pk=version.pk).status == DatasetVersion.Status.FREEZING
