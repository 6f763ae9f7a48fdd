from django.urls import path

from . import views
from . import views_campaigns as campaigns
from . import views_project_summaries as summaries
from . import views_selection as selection

app_name = "training"

urlpatterns = [
    path("projects/<int:project_id>/training/", views.run_list, name="run_list"),
    path("projects/<int:project_id>/training/runs/", views.run_create, name="run_create"),
    path("projects/<int:project_id>/training/runs/<int:run_id>/", views.run_detail, name="run_detail"),
    path("projects/<int:project_id>/training/runs/<int:run_id>/log/", views.run_log, name="run_log"),
    path("projects/<int:project_id>/training/runs/<int:run_id>/cancel/", views.run_cancel, name="run_cancel"),
    path("projects/<int:project_id>/training/runs/<int:run_id>/resume/", views.run_resume, name="run_resume"),
    path("projects/<int:project_id>/training/runs/<int:run_id>/promote/", views.run_promote, name="run_promote"),
    path("projects/<int:project_id>/training/score/", views.scoring_create, name="scoring_create"),
]

# Human-AI synergy curation campaigns.
urlpatterns += [
    path("projects/<int:project_id>/campaigns/", campaigns.campaign_list, name="campaign_list"),
    path("projects/<int:project_id>/campaigns/<int:campaign_id>/", campaigns.campaign_detail, name="campaign_detail"),
    path(
        "projects/<int:project_id>/campaigns/<int:campaign_id>/stop/",
        campaigns.campaign_stop_view,
        name="campaign_stop",
    ),
    path(
        "projects/<int:project_id>/campaigns/<int:campaign_id>/rounds/<int:number>/close/",
        campaigns.round_close,
        name="campaign_round_close",
    ),
    path(
        "projects/<int:project_id>/campaigns/<int:campaign_id>/rounds/<int:number>/decisions/",
        campaigns.decision_list,
        name="decision_list",
    ),
    path(
        "projects/<int:project_id>/campaigns/<int:campaign_id>/rounds/<int:number>/decisions/<int:decision_id>/"
        "override/",
        campaigns.decision_override,
        name="decision_override",
    ),
]

# Selective annotation: the strategy the queue follows.
urlpatterns += [
    path("projects/<int:project_id>/selection/", selection.selection_detail, name="selection"),
    path("projects/<int:project_id>/selection/policy/", selection.selection_update, name="selection_update"),
    path("projects/<int:project_id>/selection/runs/", selection.selection_run_start, name="selection_run_start"),
]

# The project list's agreement and active-model figures, a fragment its cards load (annotate may not import them).
urlpatterns += [
    path("projects/summaries/", summaries.project_summary_list, name="project_summaries"),
]
