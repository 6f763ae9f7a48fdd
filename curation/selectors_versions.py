"""Reads for dataset versions, and the access helpers their views go through.

A version is reached through a project the user curates, and only if the user is a member of every project
the version draws from: its rows carry those projects' data. Anything else is a 404, so foreign ids reveal
nothing.
"""

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from annotate.access import project_for_member, role_in_project
from annotate.models import Item, Membership, Project, Role
from curation.models import DatasetRow, DatasetVersion, ExportJob

AnyUser = AbstractBaseUser | AnonymousUser
PREVIEW_ROWS = 20


def versions_for_project(project: Project) -> QuerySet[DatasetVersion]:
    """The project's versions, newest first."""
    return (
        DatasetVersion.objects.filter(projects=project)
        .select_related("parent", "created_by")
        .prefetch_related("children", "projects")
        .order_by("-created_at", "-id")
    )


def version_for_curator(user: AnyUser, project_id: int, version_id: int) -> tuple[Project, DatasetVersion]:
    """A version of a project the user curates, the user being a member of every project in it; else 404
    (403 for a member of the project below curator, as project_for_member has it)."""
    project = project_for_member(user, project_id, min_role=Role.CURATOR)
    version = versions_for_project(project).filter(pk=version_id).first()
    if version is None or not _member_of_all(user, version):
        raise Http404("No such dataset version")
    return project, version


def _member_of_all(user: AnyUser, version: DatasetVersion) -> bool:
    return all(role_in_project(user, project) is not None for project in version.projects.all())


def export_for_member(user: AnyUser, project_id: int, version_id: int, job_id: int) -> ExportJob:
    """A finished export of a version the user may open (version_for_curator); else 404."""
    _, version = version_for_curator(user, project_id, version_id)
    job = ExportJob.objects.filter(pk=job_id, version=version, status=ExportJob.Status.DONE).first()
    if job is None or not job.file:
        raise Http404("No such export")
    return job


def version_rows_preview(version: DatasetVersion) -> QuerySet[DatasetRow]:
    return DatasetRow.objects.filter(version=version).order_by("position")[:PREVIEW_ROWS]


def export_jobs_for_version(version: DatasetVersion) -> QuerySet[ExportJob]:
    return ExportJob.objects.filter(version=version).select_related("created_by").order_by("-created_at", "-id")


def parent_choices(project: Project) -> QuerySet[DatasetVersion]:
    """Versions a new version of the project may descend from."""
    return DatasetVersion.objects.filter(projects=project).order_by("-created_at", "-id")


def curated_projects(user: AnyUser) -> QuerySet[Project]:
    """Projects the user curates or administers: what a version may draw from."""
    if getattr(user, "is_superuser", False):
        return Project.objects.order_by("name")
    if user.pk is None:
        return Project.objects.none()
    curating = Membership.objects.filter(user_id=user.pk, role__in=[Role.CURATOR, Role.ADMIN])
    return Project.objects.filter(pk__in=curating.values("project_id")).order_by("name")


def sources_for_projects(projects: list[Project]) -> list[str]:
    rows = Item.objects.filter(project__in=projects).exclude(source="").values_list("source", flat=True)
    return list(rows.distinct().order_by("source")[:200])
