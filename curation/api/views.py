"""The REST API's views. Querysets come from curation.api.permissions, so a version or export outside the
user's reach is a 404; writes go through curation's services, and exports run on a Celery worker."""

from collections.abc import Iterable
from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse, Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.pagination import PageNumberPagination
from rest_framework.parsers import BaseParser
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.reverse import reverse
from rest_framework.serializers import BaseSerializer

from curation.api.permissions import exports_for_api_user, versions_for_api_user
from curation.api.serializers import (
    ExportJobSerializer,
    ExportRequestSerializer,
    VersionDetailSerializer,
    VersionSerializer,
)
from curation.models import DatasetVersion, ExportJob
from curation.services.version_exports import export_file_name, export_job_create
from curation.services.versions import VersionError

NOT_FOUND = OpenApiResponse(description="No such version or export within your reach.")
# The extra actions below take `format`: the router also serves every route with a format suffix
# (/versions/1/manifest.json) and passes the suffix on, which an action without it answered with a 500.


class AnyAccept(BaseContentNegotiation):
    """A download answers whatever the client accepts (the file's type varies by format); errors come as JSON."""

    def select_parser(self, request: Request, parsers: Iterable[BaseParser]) -> BaseParser | None:
        return next(iter(parsers), None)

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> tuple[BaseRenderer, str]:
        renderer = JSONRenderer()
        return renderer, renderer.media_type


@extend_schema_view(
    list=extend_schema(summary="Versions you curate every project of"),
    retrieve=extend_schema(
        summary="A version with its manifest and stats", responses={200: VersionDetailSerializer, 404: NOT_FOUND}
    ),
)
class VersionViewSet(viewsets.ReadOnlyModelViewSet[DatasetVersion]):
    def get_queryset(self) -> QuerySet[DatasetVersion]:
        versions = versions_for_api_user(self.request.user)
        if self.action == "list":
            # Manifests and stats can be large; the list does not show them.
            versions = versions.defer("filters", "manifest", "stats")
        return versions

    def get_serializer_class(self) -> type[BaseSerializer[Any]]:
        if self.action == "retrieve":
            return VersionDetailSerializer
        if self.action == "exports":
            return ExportRequestSerializer if self.request.method == "POST" else ExportJobSerializer
        return VersionSerializer

    @extend_schema(summary="The version's manifest", responses={200: OpenApiTypes.OBJECT, 404: NOT_FOUND})
    @action(detail=True, methods=["get"])
    def manifest(self, request: Request, pk: str | None = None, format: str | None = None) -> Response:
        return Response(self.get_object().manifest)

    @extend_schema(
        methods=["GET"],
        summary="The version's export jobs, newest first",
        responses={200: ExportJobSerializer(many=True), 404: NOT_FOUND},
    )
    @extend_schema(
        methods=["POST"],
        summary="Request an export; a worker writes the file",
        request=ExportRequestSerializer,
        responses={
            202: ExportJobSerializer,
            404: NOT_FOUND,
            409: OpenApiResponse(description="The version is not frozen."),
        },
    )
    @action(detail=True, methods=["get", "post"])
    def exports(self, request: Request, pk: str | None = None, format: str | None = None) -> Response:
        version = self.get_object()
        if request.method == "POST":
            return self._export_create(request, version)
        jobs = ExportJob.objects.filter(version=version).order_by("-created_at", "-id")
        paginator = PageNumberPagination()  # the view's own works on versions, not jobs
        page = paginator.paginate_queryset(jobs, request, view=self)
        serializer = ExportJobSerializer(page, many=True, context=self.get_serializer_context())
        return paginator.get_paginated_response(serializer.data)

    def _export_create(self, request: Request, version: DatasetVersion) -> Response:
        form = ExportRequestSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        try:
            job = export_job_create(
                version=version,
                format=form.validated_data["format"],
                created_by=request.user,  # type: ignore[arg-type]  # IsAuthenticated: never anonymous here
            )
        except VersionError as error:
            return Response({"detail": str(error)}, status=status.HTTP_409_CONFLICT)
        data = ExportJobSerializer(job, context=self.get_serializer_context()).data
        location = reverse("api:export-detail", args=[job.pk], request=request)
        return Response(data, status=status.HTTP_202_ACCEPTED, headers={"Location": location})


@extend_schema_view(
    retrieve=extend_schema(summary="An export job", responses={200: ExportJobSerializer, 404: NOT_FOUND})
)
class ExportViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet[ExportJob]):
    serializer_class = ExportJobSerializer

    def get_queryset(self) -> QuerySet[ExportJob]:
        return exports_for_api_user(self.request.user)

    @extend_schema(
        summary="Download a finished export",
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY, 404: NOT_FOUND},
    )
    @action(detail=True, methods=["get"], content_negotiation_class=AnyAccept)
    def download(self, request: Request, pk: str | None = None, format: str | None = None) -> FileResponse:
        job = self.get_object()
        if job.status != ExportJob.Status.DONE or not job.file:
            raise Http404("The export is not done")
        # The same name as the page's download (one rule).
        return FileResponse(job.file.open("rb"), as_attachment=True, filename=export_file_name(job))
