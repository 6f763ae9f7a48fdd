"""The selection page, for project admins: pick the strategy the queue follows, rank the pool now, follow the job,
and see the learning curve of the project's reward models against the human labels spent."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling

from annotate.access import project_for_member
from annotate.models import Project, Role
from concord.forms import form_add_errors
from training.forms import SelectionPolicyForm
from training.ml.selection import STRATEGY_LABELS
from training.models import SelectionPolicy, SelectionRun
from training.selectors_campaigns import PLOT_FRAME
from training.selectors_selection import (
    learning_curve,
    selected_waiting,
    selection_blocker,
    selection_last_done,
    selection_policy,
    selection_run_active,
    selection_runs,
)
from training.services.selection import SelectionError, selection_policy_update, selection_run_create
from training.views import NAV
from training.views_campaigns import HtmxHttpRequest

TEMPLATE = "training/selection.html"
QUEUE_ORDER_LABEL = "Queue order (least annotated first)"


@login_required
@require_GET
def selection_detail(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    policy = selection_policy(project)
    live = _live_context(project, policy)
    if not request.htmx:
        return render(request, TEMPLATE, _page_context(project, policy, _form(policy), live))
    # A poll renders the job's status only, none of the page's heavier reads (the curve, the runs).
    fragment = render_to_string(f"{TEMPLATE}#live", live, request=request)
    return HttpResponse(fragment) if live["active_run"] else HttpResponseStopPolling(fragment)


@login_required
@require_POST
def selection_update(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    form = SelectionPolicyForm(request.POST)
    if form.is_valid():
        try:
            policy, run = selection_policy_update(project=project, updated_by=request.user, **form.cleaned_data)  # type: ignore[arg-type]  # login_required
        except SelectionError as error:
            form_add_errors(form, error.errors)
        else:
            messages.success(request, _saved_message(policy, run))
            return redirect("training:selection", project_id=project.pk)
    policy = selection_policy(project)
    return render(request, TEMPLATE, _page_context(project, policy, form, _live_context(project, policy)), status=422)


@login_required
@require_POST
def selection_run_start(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    try:
        run = selection_run_create(project=project, reason=SelectionRun.Reason.MANUAL, created_by=request.user)  # type: ignore[arg-type]  # login_required
    except SelectionError as error:
        policy = selection_policy(project)
        live = {**_live_context(project, policy), "run_errors": [e.message for e in error.errors]}
        return render(request, TEMPLATE, _page_context(project, policy, _form(policy), live), status=422)
    messages.success(request, _started_message(run))
    return redirect("training:selection", project_id=project.pk)


def _form(policy: SelectionPolicy) -> SelectionPolicyForm:
    fields = ("strategy", "batch_size", "random_share", "pool_limit", "every_labels", "after_promotion")
    return SelectionPolicyForm(initial={name: getattr(policy, name) for name in fields})


def _started_message(run: SelectionRun) -> str:
    if run.status == SelectionRun.Status.RUNNING:
        return f"Selection #{run.pk} is running; a new one follows it with the current settings and model."
    return f"Selection #{run.pk} is queued: the pool is being ranked on a worker."


def _saved_message(policy: SelectionPolicy, run: SelectionRun | None) -> str:
    if policy.strategy == SelectionPolicy.QUEUE_ORDER:
        return "The queue follows its own order again: every selection rank was cleared."
    name = STRATEGY_LABELS[policy.strategy]
    if run is not None:
        return f"Strategy set to {name}: the pool is being ranked on a worker."
    blocker = selection_blocker(policy=policy)
    if blocker:
        return f"Strategy set to {name}. Nothing is ranked until it can run: {blocker}."
    return f"Settings of {name} saved; they apply from the next selection."


def _live_context(project: Project, policy: SelectionPolicy) -> dict[str, Any]:
    """What the polled fragment shows: the strategy, why it cannot run, the job under way and the last one done."""
    last_done = selection_last_done(project)
    return {
        "project": project,
        "policy": policy,
        "strategy_label": STRATEGY_LABELS.get(policy.strategy, QUEUE_ORDER_LABEL),
        "blocker": selection_blocker(policy=policy) if policy.strategy else "",
        "active_run": selection_run_active(project),
        "last_done": last_done,
        "last_strategy_label": STRATEGY_LABELS.get(last_done.strategy, "") if last_done else "",
        "waiting": selected_waiting(project),
        "run_errors": [],
    }


def _page_context(
    project: Project, policy: SelectionPolicy, form: SelectionPolicyForm, live: dict[str, Any]
) -> dict[str, Any]:
    return {
        **live,
        "form": form,
        "runs": selection_runs(project),
        "curve": learning_curve(project),
        "frame": PLOT_FRAME,
        **NAV,
    }
