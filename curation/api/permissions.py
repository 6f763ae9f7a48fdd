"""What an API user reaches. Every API view goes through these querysets, so access lives in one place.

The API has no project in its URLs: a version is reached by the same rule as on the web pages
(curation.selectors_versions.versions_reachable: the user curates or administers every project the version
draws from). Anything else is a 404, so foreign ids reveal nothing.
"""

from django.db.models import QuerySet

from curation.models import DatasetVersion, ExportJob
from curation.selectors_versions import AnyUser, versions_reachable


def versions_for_api_user(user: AnyUser) -> QuerySet[DatasetVersion]:
    """The versions the user reaches, newest first."""
    return versions_reachable(user).select_related("parent").prefetch_related("projects").order_by("-created_at", "-id")


def exports_for_api_user(user: AnyUser) -> QuerySet[ExportJob]:
    """Export jobs of the versions the user reaches; newest first."""
    return (
        ExportJob.objects.filter(version__in=versions_reachable(user).values("pk"))
        .select_related("version")
        .order_by("-created_at", "-id")
    )
