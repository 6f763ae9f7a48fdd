from django.urls import path

from .views import review

app_name = "curation"

urlpatterns = [
    path("projects/<int:project_id>/review/", review.review_queue, name="review_queue"),
    path("projects/<int:project_id>/review/items/<int:item_id>/", review.adjudicate, name="adjudicate"),
    path("projects/<int:project_id>/items/<int:item_id>/flag/", review.item_flag, name="item_flag"),
]
