"""Django's admin site, for superusers who need to look at or fix raw rows."""

from django.contrib import admin

from .models import Annotation, Assignment, ImportBatch, Item, Membership, Project


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
    readonly_fields = ["content_hash", "annotation_count"]


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "annotator", "strength", "seconds_spent", "created_at"]
    list_filter = ["item__project"]
    raw_id_fields = ["item", "annotator"]


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
