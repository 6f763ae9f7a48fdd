"""The selection page, for project admins: pick the strategy the queue follows, rank the pool now, follow the job,
and see the learning curve of the project's reward models against the human labels spent."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from annotate.access import project_for_member
from annotate.models import Project, Role
from concord.forms import form_add_errors
from training.forms import SelectionPolicyForm
from training.ml.selection import STRATEGY_LABELS
from training.models import SelectionPolicy
from training.selectors_campaigns import PLOT_FRAME
from training.selectors_selection import (
    human_label_count,
    learning_curve,
    selected_waiting,
    selection_last_done,
    selection_policy,
    selection_run_active,
    selection_runs,
)
from training.services.selection import (
    SelectionError,
    selection_blocker,
    selection_can_run,
    selection_policy_update,
    selection_run_create,
)
from training.views import NAV, _poll

TEMPLATE = "training/selection.html"


@login_required
@require_GET
def selection_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    policy = selection_policy(project)
    # A poll renders the job's status only: the learning curve counts the project's labels, once per page load.
    full = not request.htmx  # type: ignore[attr-defined]
    context = _context(project, policy, SelectionPolicyForm(initial=_initial(policy)), curve=full)
    return _poll(request, TEMPLATE, "live", context, finished=context["active_run"] is None)


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
            messages.success(request, _saved_message(policy, run is not None))
            return redirect("training:selection", project_id=project.pk)
    return render(request, TEMPLATE, _context(project, selection_policy(project), form), status=422)


@login_required
@require_POST
def selection_run_start(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    try:
        selection_run_create(project=project, reason="manual", created_by=request.user)  # type: ignore[arg-type]  # login_required
    except SelectionError as error:
        policy = selection_policy(project)
        context = _context(project, policy, SelectionPolicyForm(initial=_initial(policy)))
        context["run_errors"] = [e.message for e in error.errors]
        return render(request, TEMPLATE, context, status=422)
    messages.success(request, "Selection started: the pool is being ranked on a worker.")
    return redirect("training:selection", project_id=project.pk)


def _initial(policy: SelectionPolicy) -> dict[str, Any]:
    fields = ("strategy", "batch_size", "random_share", "pool_limit", "every_labels", "after_promotion")
    return {name: getattr(policy, name) for name in fields}


def _saved_message(policy: SelectionPolicy, started: bool) -> str:
    if policy.strategy == SelectionPolicy.QUEUE_ORDER:
        return "The queue follows its own order again: every selection rank was cleared."
    name = STRATEGY_LABELS[policy.strategy]
    if started:
        return f"Strategy set to {name}: the pool is being ranked on a worker."
    if not selection_can_run(policy):
        return f"Strategy set to {name}. It reads the active reward model: the pool is ranked once one is promoted."
    return f"Settings of {name} saved; they apply from the next selection."


def _context(
    project: Project, policy: SelectionPolicy, form: SelectionPolicyForm, *, curve: bool = True
) -> dict[str, Any]:
    active_run = selection_run_active(project)
    last_done = selection_last_done(project)
    strategy = policy.strategy
    return {
        "project": project,
        "form": form,
        "policy": policy,
        "strategy_label": STRATEGY_LABELS.get(strategy, "Queue order (least annotated first)"),
        "blocker": selection_blocker(policy) if strategy else "",
        "active_run": active_run,
        "last_done": last_done,
        "last_strategy_label": STRATEGY_LABELS.get(last_done.strategy, "") if last_done else "",
        "runs": selection_runs(project),
        "waiting": selected_waiting(project),
        "labels": human_label_count(project),
        "curve": learning_curve(project) if curve else None,
        "frame": PLOT_FRAME,
        "run_errors": [],
        **NAV,
    }
