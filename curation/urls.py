from django.urls import path

from .views import quality, review

app_name = "curation"

urlpatterns = [
    path("projects/<int:project_id>/review/", review.review_queue, name="review_queue"),
    path("projects/<int:project_id>/review/threshold/", review.review_threshold, name="review_threshold"),
    path("projects/<int:project_id>/review/items/<int:item_id>/", review.adjudicate, name="adjudicate"),
    path("projects/<int:project_id>/items/<int:item_id>/flag/", review.item_flag, name="item_flag"),
    path("projects/<int:project_id>/quality/", quality.annotator_quality, name="annotator_quality"),
    path("projects/<int:project_id>/quality/refresh/", quality.quality_refresh, name="quality_refresh"),
    path(
        "projects/<int:project_id>/quality/members/<int:membership_id>/pause/",
        quality.member_pause,
        name="member_pause",
    ),
    path(
        "projects/<int:project_id>/quality/members/<int:membership_id>/weight/",
        quality.member_weight,
        name="member_weight",
    ),
    path("projects/<int:project_id>/dashboard/", quality.dashboard, name="dashboard"),
]

# Dataset versions and their exports.
from .views import versions  # noqa: E402

urlpatterns += [
    path("projects/<int:project_id>/versions/", versions.version_list, name="version_list"),
    path("projects/<int:project_id>/versions/new/", versions.version_new, name="version_new"),
    path("projects/<int:project_id>/versions/count/", versions.version_count, name="version_count"),
    path("projects/<int:project_id>/versions/<int:version_id>/", versions.version_detail, name="version_detail"),
    path("projects/<int:project_id>/versions/<int:version_id>/freeze/", versions.version_freeze, name="version_freeze"),
    path("projects/<int:project_id>/versions/<int:version_id>/exports/", versions.export_create, name="export_create"),
    path(
        "projects/<int:project_id>/versions/<int:version_id>/exports/<int:job_id>/download/",
        versions.export_download,
        name="export_download",
    ),
]

# Bulk actions from the items list.
from .views import items_bulk  # noqa: E402

urlpatterns += [
    path("projects/<int:project_id>/items/bulk/", items_bulk.items_bulk, name="items_bulk"),
]
