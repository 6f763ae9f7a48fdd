from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from concord import error_views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="annotate:project_list", permanent=False)),
    path("favicon.ico", error_views.favicon, name="favicon"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("django-admin/", admin.site.urls),
    path("api/", include("curation.api.urls")),
    path("", include("annotate.urls")),
    path("", include("curation.urls")),
    path("", include("training.urls")),
]

# Error pages in the site's layout, with the reason where there is one for people (concord/error_views.py).
handler403 = "concord.error_views.permission_denied"
handler404 = "concord.error_views.page_not_found"
handler500 = "concord.error_views.server_error"
