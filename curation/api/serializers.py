"""What the API shows of dataset versions and their exports."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.reverse import reverse

from annotate.models import Project
from curation.models import DatasetVersion, ExportJob


class ProjectRefSerializer(serializers.ModelSerializer[Project]):
    class Meta:
        model = Project
        fields = ["id", "name"]


class VersionSerializer(serializers.ModelSerializer[DatasetVersion]):
    projects = ProjectRefSerializer(many=True, read_only=True)

    class Meta:
        model = DatasetVersion
        fields = [
            "id",
            "name",
            "status",
            "projects",
            "parent",
            "content_hash",
            "row_count",
            "created_at",
            "frozen_at",
        ]
        read_only_fields = fields


class VersionDetailSerializer(VersionSerializer):
    manifest = serializers.JSONField(read_only=True, help_text="What the version is: filters, sources, hashes.")
    stats = serializers.JSONField(read_only=True, help_text="Counts by split and provenance, margin histogram.")
    filters = serializers.JSONField(read_only=True, help_text="What the version was built from.")

    class Meta(VersionSerializer.Meta):
        fields = [*VersionSerializer.Meta.fields, "filters", "manifest", "stats", "error"]
        read_only_fields = fields


class ExportJobSerializer(serializers.ModelSerializer[ExportJob]):
    download_url = serializers.SerializerMethodField(help_text="Where the file is, once the export is done.")

    class Meta:
        model = ExportJob
        fields = [
            "id",
            "version",
            "format",
            "status",
            "rows_done",
            "rows_total",
            "error",
            "created_at",
            "finished_at",
            "download_url",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.URLField(allow_null=True))
    def get_download_url(self, job: ExportJob) -> str | None:
        if job.status != ExportJob.Status.DONE or not job.file:
            return None
        return reverse("api:export-download", args=[job.pk], request=self.context.get("request"))


class ExportRequestSerializer(serializers.Serializer[None]):
    format = serializers.ChoiceField(choices=ExportJob.Format.choices)
