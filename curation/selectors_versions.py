"""Reads for dataset versions, and the access helpers their views go through.

One rule, here and nowhere else (versions_reachable): a version is reachable only by a user who curates or
administers every project it draws from, since its rows carry those projects' labels (consensus, gold answers,
adjudications). The web pages (through a project the user curates), the API, the training forms and the run pages
all read versions through it. Anything else is a 404, so foreign ids reveal nothing.
"""

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db.models import Exists, OuterRef, Prefetch, QuerySet
from django.http import Http404

from annotate.access import project_for_member
from annotate.models import Item, Membership, Project, Role
from curation.models import DatasetRow, DatasetVersion, ExportJob

AnyUser = AbstractBaseUser | AnonymousUser
PREVIEW_ROWS = 20


def versions_reachable(user: AnyUser) -> QuerySet[DatasetVersion]:
    """Versions with at least one project, every one of which the user curates or administers (the module's rule)."""
    links = DatasetVersion.projects.through.objects.filter(datasetversion_id=OuterRef("pk"))
    foreign = links.exclude(project_id__in=curated_projects(user).values("pk"))
    return DatasetVersion.objects.filter(Exists(links)).exclude(Exists(foreign))


def versions_for_project(project: Project, user: AnyUser) -> QuerySet[DatasetVersion]:
    """The project's versions the user reaches, newest first. Lineage is cut to what the user reaches too: the
    children prefetched are only those, and parent_reachable says whether the parent is, so a page names no
    version the user could not open."""
    reachable = versions_reachable(user)
    return (
        reachable.filter(projects=project)
        .annotate(parent_reachable=Exists(reachable.filter(pk=OuterRef("parent_id"))))
        .select_related("parent", "created_by")
        .prefetch_related(Prefetch("children", queryset=reachable.order_by("-created_at", "-id")), "projects")
        .order_by("-created_at", "-id")
    )


def version_for_curator(user: AnyUser, project_id: int, version_id: int) -> tuple[Project, DatasetVersion]:
    """A version of a project the user curates, the user curating every project in it too; else 404 (403 for
    a member of the project in the URL below curator, as project_for_member has it)."""
    project = project_for_member(user, project_id, min_role=Role.CURATOR)
    version = versions_for_project(project, user).filter(pk=version_id).first()
    if version is None:
        raise Http404("No such dataset version")
    return project, version


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


def parent_choices(project: Project, user: AnyUser) -> QuerySet[DatasetVersion]:
    """Versions a new version of the project may descend from: the project's that the user reaches."""
    return versions_reachable(user).filter(projects=project).order_by("-created_at", "-id")


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
