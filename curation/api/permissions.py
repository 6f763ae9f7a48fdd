"""What an API user reaches. Every API view goes through these querysets, so access lives in one place.

The API has no project in its URLs, so a version is reached only by a user who curates (or administers) every
project it draws from: the same curated_projects the web pages use, applied to all of the version's projects.
Anything else is a 404, as in curation.selectors_versions, so foreign ids reveal nothing.
"""

from django.db.models import Exists, OuterRef, QuerySet

from curation.models import DatasetVersion, ExportJob
from curation.selectors_versions import AnyUser, curated_projects

VersionProjects = DatasetVersion.projects.through


def versions_for_api_user(user: AnyUser) -> QuerySet[DatasetVersion]:
    """Versions with at least one project, every one of which the user curates; newest first."""
    links = VersionProjects.objects.filter(datasetversion_id=OuterRef("pk"))
    foreign = links.exclude(project_id__in=curated_projects(user).values("pk"))
    return (
        DatasetVersion.objects.filter(Exists(links))
        .exclude(Exists(foreign))
        .select_related("parent")
        .prefetch_related("projects")
        .order_by("-created_at", "-id")
    )


def exports_for_api_user(user: AnyUser) -> QuerySet[ExportJob]:
    """Export jobs of the versions the user reaches; newest first."""
    return (
        ExportJob.objects.filter(version__in=versions_for_api_user(user).values("pk"))
        .select_related("version")
        .order_by("-created_at", "-id")
    )
