"""Human-AI synergy campaign pages, for curators (admins start and stop them): the campaigns and the start form,
a campaign's rounds live with their plots, and a round's decisions with a curator's override of each."""

from typing import Any

from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling
from django_htmx.middleware import HtmxDetails

from annotate.access import project_for_member, role_in_project
from annotate.models import Project, Role
from concord.forms import form_add_errors
from curation.selectors_quality import pool_counts_cached
from curation.services.quality import project_quality_ensure
from training.forms import CampaignForm, DecisionFilterForm, OverrideForm
from training.models import Campaign, CampaignRound
from training.selectors_campaigns import (
    PLOT_FRAME,
    PROMPT_SNIPPET_CHARS,
    accuracy_plot,
    campaign_for_curator,
    campaign_rounds,
    campaign_settings_rows,
    campaigns_for_project,
    decision_rows,
    decision_share_plot,
    pair_decision_in_round,
    round_decisions,
    round_for_curator,
    round_rows,
    strength_histogram,
)
from training.services.campaigns import (
    CampaignError,
    campaign_round_close,
    campaign_start,
    campaign_stop,
    pair_decision_override,
)

DECISIONS_PER_PAGE = 50


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


def _nav(request: HttpRequest, project: Project) -> dict[str, Any]:
    role = role_in_project(request.user, project)
    return {"project": project, "is_admin": role == Role.ADMIN, "is_curator": role in (Role.CURATOR, Role.ADMIN)}


def _user(request: HttpRequest) -> AbstractBaseUser:
    assert isinstance(request.user, AbstractBaseUser)  # login_required: never anonymous here
    return request.user


@login_required
@require_http_methods(["GET", "POST"])
def campaign_list(request: HttpRequest, project_id: int) -> HttpResponse:
    """The project's campaigns and pools; an admin's POST starts a campaign."""
    if request.method != "POST":
        project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
        return _campaign_list(request, project, CampaignForm())
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    form = CampaignForm(request.POST)
    if form.is_valid():
        try:
            campaign = campaign_start(
                project=project, name=form.cleaned_data["name"], config=form.settings(), created_by=_user(request)
            )
        except CampaignError as error:
            form_add_errors(form, error.errors)
        else:
            messages.success(request, f"Campaign {campaign.name} started: round 1 waits for a gpu worker.")
            return redirect("training:campaign_detail", project_id=project.pk, campaign_id=campaign.pk)
    return _campaign_list(request, project, form, status=422)


def _campaign_list(request: HttpRequest, project: Project, form: CampaignForm, status: int = 200) -> HttpResponse:
    # The pool counts a worker cached with the dashboard's figures (asked for when due), shown with their age:
    # counting them here would scan every item of the project per page load.
    quality = project_quality_ensure(project=project)
    context = {
        **_nav(request, project),
        "campaigns": list(campaigns_for_project(project)[:100]),
        "pools": pool_counts_cached(quality=quality),
        "pools_at": quality.computed_at,
        "form": form,
    }
    return render(request, "training/campaign_list.html", context, status=status)


@login_required
@require_GET
def campaign_detail(request: HtmxHttpRequest, project_id: int, campaign_id: int) -> HttpResponse:
    """The campaign's settings, rounds (live while it runs: htmx polls the `live` partial) and plots."""
    campaign = campaign_for_curator(request.user, project_id, campaign_id)
    rounds = campaign_rounds(campaign)
    context = {
        **_nav(request, campaign.project),
        "campaign": campaign,
        "running": campaign.status == Campaign.Status.RUNNING,
        "settings": campaign_settings_rows(campaign),
        "rows": round_rows(campaign, rounds),
        "accuracy": accuracy_plot(rounds),
        "shares": decision_share_plot(rounds),
        "histogram": strength_histogram(rounds),
        "frame": PLOT_FRAME,
    }
    template = "training/campaign_detail.html"
    if not request.htmx:
        return render(request, template, context)
    if not context["running"]:  # 286: htmx swaps the final state in and stops polling
        return HttpResponseStopPolling(render_to_string(f"{template}#live", context, request=request))
    return render(request, f"{template}#live", context)


@login_required
@require_POST
def campaign_stop_view(request: HttpRequest, project_id: int, campaign_id: int) -> HttpResponse:
    campaign = campaign_for_curator(request.user, project_id, campaign_id, min_role=Role.ADMIN)
    try:
        campaign_stop(campaign=campaign, by=_user(request))
    except CampaignError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Campaign {campaign.name} stopped; what its finished rounds froze stays.")
    return redirect("training:campaign_detail", project_id=project_id, campaign_id=campaign.pk)


@login_required
@require_POST
def round_close(request: HttpRequest, project_id: int, campaign_id: int, number: int) -> HttpResponse:
    round_ = round_for_curator(request.user, project_id, campaign_id, number)
    try:
        campaign_round_close(round_=round_, by=_user(request))
    except CampaignError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Round {number} closed: pairs not labelled yet stay out; it freezes next.")
    return redirect("training:campaign_detail", project_id=project_id, campaign_id=campaign_id)


@login_required
@require_GET
def decision_list(request: HttpRequest, project_id: int, campaign_id: int, number: int) -> HttpResponse:
    """A round's decisions, filtered by the query string, weakest strength first, with an override form each."""
    round_ = round_for_curator(request.user, project_id, campaign_id, number)
    return _decision_page(request, round_)


@login_required
@require_POST
def decision_override(
    request: HttpRequest, project_id: int, campaign_id: int, number: int, decision_id: int
) -> HttpResponse:
    """A curator's override of one decision; the list's filters ride in the query string both ways."""
    round_ = round_for_curator(request.user, project_id, campaign_id, number)
    pair = pair_decision_in_round(round_, decision_id)
    form = OverrideForm(request.POST, pool=pair.pool, auto_id=f"override-{pair.pk}-%s")
    if form.is_valid():
        try:
            pair_decision_override(
                pair_decision=pair,
                curator=_user(request),
                decision=form.cleaned_data["decision"],
                reason=form.cleaned_data["reason"],
            )
        except CampaignError as error:
            form_add_errors(form, error.errors)
        else:
            messages.success(request, f"Item {pair.item.number}: {form.cleaned_data['decision']} (overridden).")
            url = reverse("training:decision_list", args=[project_id, campaign_id, number])
            query = request.GET.urlencode()
            return redirect(f"{url}?{query}#decision-{pair.pk}" if query else f"{url}#decision-{pair.pk}")
    return _decision_page(request, round_, failed=(pair.pk, pair.item.number, form), status=422)


def _decision_page(
    request: HttpRequest,
    round_: CampaignRound,
    *,
    failed: tuple[int, int, OverrideForm] | None = None,
    status: int = 200,
) -> HttpResponse:
    """The decision list; `failed` is (decision id, item number, bound form) of an override that was refused."""
    campaign = round_.campaign
    filter_form = DecisionFilterForm(request.GET)
    if filter_form.is_valid():
        page = Paginator(round_decisions(round_, filter_form.filters()), DECISIONS_PER_PAGE).get_page(
            request.GET.get("page")
        )
        rows = decision_rows(list(page.object_list))
    else:  # a bad filter lists nothing rather than something it did not ask for
        page, rows, status = None, [], 400
    frozen = round_.stage in (CampaignRound.Stage.FREEZE, CampaignRound.Stage.DONE)
    forms = {}
    for row in rows:
        pk = row.decision.pk
        forms[pk] = (
            failed[2]
            if failed and failed[0] == pk
            else OverrideForm(pool=row.decision.pool, auto_id=f"override-{pk}-%s")
        )
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        **_nav(request, campaign.project),
        "campaign": campaign,
        "round": round_,
        "filter_form": filter_form,
        "page": page,
        "rows": [(row, forms[row.decision.pk]) for row in rows],
        "failed": failed,
        "frozen": frozen,
        "query": request.GET.urlencode(),
        "filter_query": query.urlencode(),
        "snippet_chars": PROMPT_SNIPPET_CHARS,
    }
    return render(request, "training/campaign_decisions.html", context, status=status)
