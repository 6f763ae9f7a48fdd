from django.urls import path

from .views import imports, items, labeling, projects, schema

app_name = "annotate"

urlpatterns = [
    path("projects/", projects.project_list, name="project_list"),
    path("projects/new/", projects.project_new, name="project_new"),
    path("projects/<int:project_id>/", projects.project_queue, name="project_queue"),
    path("projects/<int:project_id>/settings/", projects.project_settings, name="project_settings"),
    path("projects/<int:project_id>/members/", projects.project_members, name="project_members"),
    path(
        "projects/<int:project_id>/members/<int:membership_id>/remove/",
        projects.member_remove,
        name="member_remove",
    ),
    path("projects/<int:project_id>/label/", labeling.label, name="label"),
    path("projects/<int:project_id>/label/next/", labeling.label_next, name="label_next"),
    path("projects/<int:project_id>/items/<int:item_id>/submit/", labeling.submit, name="submit"),
    path("projects/<int:project_id>/items/<int:item_id>/skip/", labeling.skip, name="skip"),
    path("projects/<int:project_id>/schema/", schema.schema_edit, name="schema_edit"),
    path("projects/<int:project_id>/items/", items.item_list, name="item_list"),
    path("projects/<int:project_id>/items/<int:item_id>/", items.item_detail, name="item_detail"),
    path("projects/<int:project_id>/items/<int:item_id>/gold/remove/", items.item_gold_remove, name="item_gold_remove"),
    path("projects/<int:project_id>/imports/", imports.import_list, name="import_list"),
    path("projects/<int:project_id>/imports/<int:batch_id>/", imports.import_detail, name="import_detail"),
]
