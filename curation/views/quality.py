"""Curator pages on the annotators and the data: annotator quality (with pause and weight) and a dashboard.

Charts are inline SVG drawn by the templates from numbers computed here, so no data is ever marked safe. Both
pages show statistics a worker computed and cached in one refresh (curation.services.quality): a request reads
that row (and the annotators page the memberships), and at most asks for a refresh.
"""

from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseStopPolling
from django_htmx.middleware import HtmxDetails

from annotate.access import project_for_member, role_in_project
from annotate.models import Project, Role
from curation import selectors_quality as quality
from curation.access import membership_for_curator
from curation.services.quality import (
    membership_pause,
    membership_weight_set,
    project_quality_ensure,
    project_quality_request,
)

# Plot area of the charts, in SVG user units.
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 560, 240, 48, 28, 12


class HtmxHttpRequest(HttpRequest):
    htmx: HtmxDetails


class WeightForm(forms.Form):
    weight = forms.FloatField(min_value=0, max_value=1)


def _nav(request: HttpRequest, project: Project) -> dict[str, object]:
    role = role_in_project(request.user, project)
    return {"project": project, "is_admin": role == Role.ADMIN, "is_curator": role in (Role.CURATOR, Role.ADMIN)}


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    flagged: bool = False


@dataclass(frozen=True)
class Tick:
    at: float
    label: str


def _x(fraction: float) -> float:
    return round(LEFT + fraction * (WIDTH - LEFT - 8), 1)


def _y(fraction: float) -> float:
    return round(HEIGHT - BOTTOM - fraction * (HEIGHT - BOTTOM - TOP), 1)


def _scatter(annotators: list[quality.AnnotatorQuality]) -> dict[str, object]:
    """Median seconds per item (x) against agreement with the consensus (y), one point per annotator."""
    shown = [a for a in annotators if a.agreement is not None and a.median_seconds is not None]
    top = max([a.median_seconds or 0 for a in shown] + [1.0]) * 1.1
    points = [Point(_x((a.median_seconds or 0) / top), _y(a.agreement or 0), a.username, bool(a.flags)) for a in shown]
    x_ticks = [Tick(_x(i / 4), f"{top * i / 4:.0f}") for i in range(5)]
    y_ticks = [Tick(_y(i / 4), f"{i / 4:.2f}") for i in range(5)]
    return {"points": points, "x_ticks": x_ticks, "y_ticks": y_ticks}


@require_GET
@login_required
def annotator_quality(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    """The annotators page, from the statistics a worker cached (a refresh is asked for when due). While one is
    on its way, htmx polls the `status` partial; once it is over, a poll reloads the page if the figures changed."""
    project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
    page = quality.quality_page(project=project, quality=project_quality_ensure(project=project))
    context = {**_nav(request, project), "page": page, "report": page.report, "scatter": _scatter(page.annotators)}
    template = "curation/quality.html"
    if not request.htmx:
        return render(request, template, {**context, **_page_extras()})
    return _status_poll(request, template, context, in_flight=page.in_flight, stamp=page.stamp)


def _status_poll(
    request: HtmxHttpRequest, template: str, context: dict[str, object], *, in_flight: bool, stamp: str
) -> HttpResponse:
    """htmx's poll of a figures page's `status` partial: polled again while a refresh is on its way; once it is
    over, polling stops, and the page reloads if its figures are not the newest."""
    if in_flight:
        return render(request, f"{template}#status", context)
    response = HttpResponseStopPolling(render_to_string(f"{template}#status", context, request=request))
    if request.GET.get("shown", "") != stamp:
        response["HX-Refresh"] = "true"  # newer figures than the page shows
    return response


def _page_extras() -> dict[str, object]:
    rules = {
        "fast": round(100 * quality.FAST_FRACTION),
        "margin": quality.LOW_AGREEMENT_MARGIN,
        "gold": round(100 * quality.LOW_GOLD_ACCURACY),
        "skip": round(100 * quality.HIGH_SKIP_RATE),
        "min_compared": quality.MIN_COMPARED,
    }
    frame = {"width": WIDTH, "height": HEIGHT, "left": LEFT, "bottom": HEIGHT - BOTTOM, "top": TOP}
    return {"rules": rules, "frame": frame}


# The pages a "refresh now" may come from (its `back` field), and where it returns: the same refresh serves both.
REFRESH_BACK = {"dashboard": "curation:dashboard", "annotators": "curation:annotator_quality"}


@require_POST
@login_required
def quality_refresh(request: HttpRequest, project_id: int) -> HttpResponse:
    """A curator's "refresh now" on the annotators page or the dashboard: a worker computes the statistics of
    both again, changed labels or not."""
    project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
    project_quality_request(project=project, force=True)
    messages.success(request, "A worker is computing the statistics again; this page shows them when it is done.")
    back = REFRESH_BACK.get(request.POST.get("back", ""), REFRESH_BACK["annotators"])
    return redirect(back, project_id=project.pk)


@require_POST
@login_required
def member_pause(request: HttpRequest, project_id: int, membership_id: int) -> HttpResponse:
    membership = membership_for_curator(request.user, project_id, membership_id)
    paused = request.POST.get("paused") == "1"
    membership_pause(membership=membership, paused=paused)
    state = "paused: no new items are handed to them" if paused else "resumed"
    messages.success(request, f"{membership.user.get_username()} {state}.")
    return redirect("curation:annotator_quality", project_id=project_id)


@require_POST
@login_required
def member_weight(request: HttpRequest, project_id: int, membership_id: int) -> HttpResponse:
    membership = membership_for_curator(request.user, project_id, membership_id)
    form = WeightForm(request.POST)
    if not form.is_valid():
        messages.error(request, "The weight must be a number from 0 to 1.")
        return redirect("curation:annotator_quality", project_id=project_id)
    membership_weight_set(membership=membership, weight=form.cleaned_data["weight"])
    messages.success(request, f"{membership.user.get_username()} now counts {form.cleaned_data['weight']:.2f}.")
    return redirect("curation:annotator_quality", project_id=project_id)


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    count: int

    @property
    def center(self) -> float:
        return round(self.x + self.width / 2, 1)

    @property
    def end(self) -> float:
        return round(self.x + self.width + 6, 1)

    @property
    def baseline(self) -> float:
        return round(self.y + self.height * 0.7, 1)


def _histogram(histogram: dict[int, int]) -> list[Bar]:
    top = max([*histogram.values(), 1])
    slot = (WIDTH - LEFT - 8) / len(histogram)
    bars = []
    for index, (value, count) in enumerate(sorted(histogram.items())):
        height = (HEIGHT - BOTTOM - TOP) * count / top
        bars.append(
            Bar(
                round(LEFT + index * slot + 4, 1),
                round(HEIGHT - BOTTOM - height, 1),
                round(slot - 8, 1),
                round(height, 1),
                f"{value:+d}" if value else "0",
                count,
            )
        )
    return bars


def _states(states: dict[str, int]) -> list[Bar]:
    """Horizontal bars, one row per state."""
    top = max([*states.values(), 1])
    return [
        Bar(140, 8 + 28 * index, round((WIDTH - 200) * count / top, 1), 20, state, count)
        for index, (state, count) in enumerate(states.items())
    ]


def _timeline(points: list[quality.AgreementPoint]) -> dict[str, object]:
    if not points:
        return {"points": [], "line": ""}
    span = max(len(points) - 1, 1)
    placed = [
        Point(
            _x(index / span if len(points) > 1 else 0.5),
            _y(point.agreement),
            f"{point.day}: {point.agreement:.2f} over {point.items} items",
        )
        for index, point in enumerate(points)
    ]
    return {
        "points": placed,
        "line": " ".join(f"{p.x},{p.y}" for p in placed),
        "first": points[0].day,
        "last": points[-1].day,
        "y_ticks": [Tick(_y(i / 4), f"{i / 4:.2f}") for i in range(5)],
    }


@require_GET
@login_required
def dashboard(request: HtmxHttpRequest, project_id: int) -> HttpResponse:
    """The dashboard, from the figures a worker cached with the annotators page's (a refresh is asked for when
    due). While one is on its way, htmx polls the `status` partial; once it is over, a poll reloads the page if
    the figures changed."""
    project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
    page = quality.dashboard_page(quality=project_quality_ensure(project=project))
    context: dict[str, object] = {**_nav(request, project), "page": page, "dashboard": page.dashboard}
    template = "curation/dashboard.html"
    if not request.htmx:
        return render(request, template, {**context, **_dashboard_charts(page.dashboard)})
    return _status_poll(request, template, context, in_flight=page.in_flight, stamp=page.stamp)


def _dashboard_charts(data: quality.Dashboard | None) -> dict[str, object]:
    if data is None:
        return {}
    return {
        "pools": data.pools,
        "histogram": _histogram(data.histogram),
        "states": _states(data.states),
        "timeline": _timeline(data.over_time),
        "frame": {"width": WIDTH, "height": HEIGHT, "left": LEFT, "bottom": HEIGHT - BOTTOM, "top": TOP},
    }
