"""Training pages, for project admins: retrain, follow runs live, cancel, promote a model, score the items."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from annotate.access import project_for_member
from annotate.models import Project, Role
from concord.forms import form_add_errors
from training.forms import RetrainForm, ScoringForm
from training.models import RewardModel
from training.selectors import (
    CURVE_BOX,
    CURVE_HEIGHT,
    CURVE_VIEW_BOX,
    CURVE_WIDTH,
    heldout_accuracy_chart,
    latest_scoring_job,
    model_rows,
    objective_label,
    reward_models_for_project,
    run_curve,
    run_eta_seconds,
    run_for_admin,
    run_is_stale,
    run_metrics,
    run_percent,
    run_rows,
    runs_for_project,
)
from training.services.runs import TrainingError, training_run_cancel, training_run_enqueue, training_run_resume
from training.services.scoring import promotion_warning, reward_model_promote, scoring_job_create

NAV = {"is_admin": True, "is_curator": True}


def _poll(request: HttpRequest, template: str, fragment: str, context: dict[str, Any], finished: bool) -> HttpResponse:
    """The whole page, or for htmx the live fragment; 286 stops the polling once nothing is left to follow."""
    if not request.htmx:  # type: ignore[attr-defined]
        return render(request, template, context)
    if finished:
        return HttpResponseStopPolling(render_to_string(f"{template}#{fragment}", context, request=request))
    return render(request, f"{template}#{fragment}", context)


@login_required
@require_GET
def run_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    return _run_list(request, project, RetrainForm(project=project, user=request.user))


def _run_list(request: HttpRequest, project: Project, form: RetrainForm, status: int = 200) -> HttpResponse:
    runs = list(runs_for_project(project, request.user)[:50])
    models = list(reward_models_for_project(project, request.user)[:50])
    chart = heldout_accuracy_chart(models)
    scoring = latest_scoring_job(project)
    finished = all(run.finished for run in runs) and (scoring is None or scoring.finished)
    context = {
        "project": project,
        "form": form,
        "rows": run_rows(runs),
        "models": model_rows(models, chart.bars),
        "chart": chart,
        "scoring": scoring,
        "scoring_form": ScoringForm(project=project, user=request.user),
        "finished": finished,
        **NAV,
    }
    if status != 200:
        return render(request, "training/runs.html", context, status=status)
    return _poll(request, "training/runs.html", "live", context, finished)


@login_required
@require_POST
def run_create(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    form = RetrainForm(request.POST, project=project, user=request.user)
    if form.is_valid():
        try:
            run = training_run_enqueue(
                project=project,
                version=form.cleaned_data["dataset_version"],
                config=form.cleaned_config,
                created_by=request.user,  # type: ignore[arg-type]  # login_required: never anonymous here
            )
        except TrainingError as error:
            form_add_errors(form, error.errors)
        else:
            return redirect("training:run_detail", project_id=project.pk, run_id=run.pk)
    return _run_list(request, project, form, status=422)


@login_required
@require_GET
def run_detail(request: HttpRequest, project_id: int, run_id: int) -> HttpResponse:
    project, run = run_for_admin(request.user, project_id, run_id)
    model = RewardModel.objects.filter(run=run).first()
    context = {
        "project": project,
        "run": run,
        "model": model,
        "percent": run_percent(run),
        "eta_seconds": run_eta_seconds(run),
        "stale": run_is_stale(run),
        "loss": run_curve(run.history, "loss"),
        "accuracy": run_curve(run.history, "eval_accuracy", low=0.0, high=1.0),
        "curve_width": CURVE_WIDTH,
        "curve_height": CURVE_HEIGHT,
        "curve_box": CURVE_BOX,
        "curve_view_box": CURVE_VIEW_BOX,
        "curve_mid_x": CURVE_WIDTH // 2,
        "curve_mid_y": CURVE_HEIGHT // 2,
        "objective": objective_label((run.config or {}).get("objective")),
        "final": run_metrics(run.metrics),
        "scoring_form": ScoringForm(project=project, user=request.user),
        "promotion_warning": promotion_warning(model) if model is not None else "",
        **NAV,
    }
    return _poll(request, "training/run_detail.html", "live", context, run.finished)


@login_required
@require_POST
def run_cancel(request: HttpRequest, project_id: int, run_id: int) -> HttpResponse:
    project, run = run_for_admin(request.user, project_id, run_id)
    try:
        training_run_cancel(run=run)
    except TrainingError as error:
        messages.error(request, str(error))
    return redirect("training:run_detail", project_id=project.pk, run_id=run.pk)


@login_required
@require_POST
def run_resume(request: HttpRequest, project_id: int, run_id: int) -> HttpResponse:
    """Send a run whose worker died to the gpu queue again (see training_run_resume)."""
    project, run = run_for_admin(request.user, project_id, run_id)
    try:
        training_run_resume(run=run)
    except TrainingError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Run {run.pk} was sent to a worker again.")
    return redirect("training:run_detail", project_id=project.pk, run_id=run.pk)


@login_required
@require_POST
def run_promote(request: HttpRequest, project_id: int, run_id: int) -> HttpResponse:
    project, run = run_for_admin(request.user, project_id, run_id)
    model = RewardModel.objects.filter(run=run).first()
    if model is None:
        messages.error(request, "This run has no trained model to promote.")
        return redirect("training:run_detail", project_id=project.pk, run_id=run.pk)
    try:
        reward_model_promote(reward_model=model, despite_warning=request.POST.get("despite_warning") == "1")
    except TrainingError as error:
        messages.error(request, f"Not promoted. {' '.join(e.message for e in error.errors)}")
    else:
        messages.success(request, f"The model of run {run.pk} is now the active reward model of {project.name}.")
    return redirect("training:run_detail", project_id=project.pk, run_id=run.pk)


@login_required
@require_POST
def scoring_create(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    form = ScoringForm(request.POST, project=project, user=request.user)
    if not form.is_valid():  # a version of another project, a draft, or no such id
        raise Http404("No such frozen version in this project")
    try:
        scoring_job_create(
            project=project,
            created_by=request.user,  # type: ignore[arg-type]
            dataset_version=form.cleaned_data["dataset_version"],
        )
    except TrainingError as error:
        messages.error(request, str(error))
    return redirect("training:run_list", project_id=project.pk)


@login_required
@require_http_methods(["GET"])
def run_log(request: HttpRequest, project_id: int, run_id: int) -> HttpResponse:
    _, run = run_for_admin(request.user, project_id, run_id)
    return HttpResponse(run.log, content_type="text/plain; charset=utf-8")
