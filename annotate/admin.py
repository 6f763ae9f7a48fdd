"""Django's admin site, for superusers who need to look at or fix raw rows."""

from typing import Any

from django.contrib import admin
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest

from .models import LABEL_COUNTED_FIELDS, Annotation, Assignment, ImportBatch, Item, Membership, Project
from .services.label_summary import items_labels_repair


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "overlap", "lease_minutes", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "source", "external_id", "annotation_count", "created_at"]
    list_filter = ["project"]
    search_fields = ["external_id", "content_hash"]
    raw_id_fields = ["import_batch"]
    # Counted from the annotations (annotate.services.label_summary), never typed in.
    readonly_fields = ["content_hash", *LABEL_COUNTED_FIELDS]


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    """A fixed or removed annotation changes what its item's labels add up to: the item is counted again."""

    list_display = ["id", "item", "annotator", "strength", "seconds_spent", "created_at"]
    list_filter = ["item__project"]
    raw_id_fields = ["item", "annotator"]

    @transaction.atomic
    def save_model(self, request: HttpRequest, obj: Annotation, form: Any, change: bool) -> None:
        before = form.initial.get("item") if change else None
        super().save_model(request, obj, form, change)
        items_labels_repair(item_ids=[obj.item_id, *([before] if before else [])])

    @transaction.atomic
    def delete_model(self, request: HttpRequest, obj: Annotation) -> None:
        item_id = obj.item_id
        super().delete_model(request, obj)
        items_labels_repair(item_ids=[item_id])

    @transaction.atomic
    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Annotation]) -> None:
        item_ids = list(queryset.values_list("item_id", flat=True))
        super().delete_queryset(request, queryset)
        items_labels_repair(item_ids=item_ids)


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "annotator", "status", "expires_at"]
    list_filter = ["status", "item__project"]
    raw_id_fields = ["item", "annotator"]


@admin.register(ImportBatch)
class ImportBatchAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "file_name", "format", "status", "items_created", "duplicates_skipped"]
    list_filter = ["status", "project"]
    readonly_fields = [field.name for field in ImportBatch._meta.fields]
