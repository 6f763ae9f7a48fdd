"""/api/v1/ (the REST API, with a browsable version for a logged-in browser) and /api/schema/ (OpenAPI 3)."""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from curation.api.views import ExportViewSet, VersionViewSet

app_name = "api"

router = DefaultRouter()
router.register("versions", VersionViewSet, basename="version")
router.register("exports", ExportViewSet, basename="export")

urlpatterns = [
    path("v1/", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
]
