"""The review queue of disagreeing items, the adjudication page, and flagging an item for review."""

import itertools
import re
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate.access import item_for_annotator, item_for_curator, project_for_member, role_in_project
from annotate.labels import SCALES, strength_labels
from annotate.models import Annotation, Item, Role
from annotate.selectors import annotation_scale, item_annotations, label_schema_current, schema_scales
from curation.forms import AdjudicationForm
from curation.models import Adjudication, ItemFlag
from curation.selectors_review import REASONS, item_consensus, project_sources, review_queue_page
from curation.selectors_review_next import QueueFilters, QueuePosition, project_item_named, review_queue_next
from curation.services.adjudication import AdjudicationError, adjudication_record, item_flag_raise
from curation.services.quality import project_model_threshold_set
from training.selectors import item_model_view, queue_model
from training.services.review_sync import review_queue_bring_up_to_date

COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")
NO_COLOR = "#bbbbbb"


class FlagForm(forms.Form):
    reason = forms.CharField(max_length=500)


def _nav_context(request: HttpRequest, project: Any) -> dict[str, Any]:
    role = role_in_project(request.user, project)
    return {"is_admin": role == Role.ADMIN, "is_curator": role in (Role.CURATOR, Role.ADMIN)}


@require_GET
@login_required
def review_queue(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
    reason = request.GET.get("reason", "")
    reason = reason if reason in REASONS else ""
    source = request.GET.get("source", "")
    model = queue_model(project)  # training's scores, handed to the queue: curation does not read training
    up_to_date = review_queue_bring_up_to_date(project=project, model=model)
    page, entries = review_queue_page(
        project=project, reason=reason, source=source, page=request.GET.get("page"), model=model
    )
    context = {
        "project": project,
        "page": page,
        "entries": entries,
        "reasons": list(REASONS.items()),
        "reason": reason,
        "sources": project_sources(project=project),
        "source": source,
        "model": model,
        "up_to_date": up_to_date,
        "threshold_form": ThresholdForm(initial={"threshold": project.model_threshold}),
        # Carried to each item's adjudication page, so that a decision opens the next item under these filters.
        "queue_query": QueueFilters(
            reason=reason, source=source, page=str(page.number) if page.number > 1 else ""
        ).query(),
        **_nav_context(request, project),
    }
    return render(request, "curation/review_queue.html", context)


class ThresholdForm(forms.Form):
    threshold = forms.FloatField(
        min_value=0.5,
        max_value=1.0,
        label="Model confidence threshold",
        help_text="An item whose annotators agree enters the queue when the active model gives the other side at "
        "least this probability (calibrated on its validation pairs).",
    )


@require_POST
@login_required
def review_threshold(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
    form = ThresholdForm(request.POST)
    if form.is_valid():
        project_model_threshold_set(project=project, threshold=form.cleaned_data["threshold"])
        messages.success(request, f"The model must now be {form.cleaned_data['threshold']:.2f} sure to disagree.")
    else:
        messages.error(request, "The threshold must be a probability from 0.5 to 1.")
    return redirect("curation:review_queue", project_id=project.pk)


@dataclass(frozen=True)
class Segment:
    text: str
    category: str
    color: str


def highlight(text: str, spans: list[dict[str, Any]], colors: dict[str, str]) -> list[Segment]:
    """The text cut at span boundaries, each piece with the category of the first span covering it (empty
    when none). Rendered with autoescaping: the text is never trusted."""
    valid = [
        s
        for s in spans
        if isinstance(s, dict)
        and isinstance(s.get("start"), int)
        and isinstance(s.get("end"), int)
        and 0 <= s["start"] < s["end"] <= len(text)
    ]
    cuts = sorted({0, len(text), *(s["start"] for s in valid), *(s["end"] for s in valid)})
    segments = []
    for start, end in itertools.pairwise(cuts):
        covering = next((s for s in valid if s["start"] <= start and end <= s["end"]), None)
        category = str(covering.get("category", "")) if covering else ""
        color = colors.get(category, NO_COLOR) if covering else ""
        segments.append(Segment(text[start:end], category, color if not color or COLOR.match(color) else NO_COLOR))
    return segments


@dataclass
class AnnotationView:
    annotation: Annotation
    strength_label: str
    highlights: list[tuple[str, list[Segment]]]  # (side, segments) for each side with spans


def _annotation_views(item: Item, definition: dict[str, Any]) -> list[AnnotationView]:
    scales = schema_scales(project=item.project)
    colors = {c["name"]: c.get("color", NO_COLOR) for c in definition.get("spans", {}).get("categories", [])}
    texts = {"a": item.response_a, "b": item.response_b}
    views = []
    for annotation in item_annotations(item=item):
        scale = annotation_scale(annotation, item, scales) or "seven"
        labels = strength_labels({"preference": {"scale": scale}})
        label = "" if annotation.strength is None else labels.get(annotation.strength, "")
        spans = annotation.spans if isinstance(annotation.spans, list) else []
        highlights = [
            (
                side,
                highlight(texts[side], [s for s in spans if isinstance(s, dict) and s.get("response") == side], colors),
            )
            for side in ("a", "b")
            if any(isinstance(s, dict) and s.get("response") == side for s in spans)
        ]
        views.append(AnnotationView(annotation, label, highlights))
    return views


def _ratings_grid(annotations: list[AnnotationView]) -> list[dict[str, Any]]:
    """Rows of (response, attribute) with each annotation's value, and whether they spread over more than 2."""
    keys = sorted(
        {
            (side, name)
            for view in annotations
            for side, given in (view.annotation.ratings or {}).items()
            if isinstance(given, dict)
            for name in given
        }
    )
    rows = []
    for side, name in keys:
        values = [(view.annotation.ratings.get(side) or {}).get(name) for view in annotations]
        numbers = [v for v in values if isinstance(v, int)]
        spread = bool(numbers) and max(numbers) - min(numbers) > 2
        rows.append({"side": side.upper(), "name": name, "values": values, "spread": spread})
    return rows


def _with_query(url: str, query: str) -> str:
    return f"{url}?{query}" if query else url


def _after_decision(item: Item, filters: QueueFilters, position: QueuePosition) -> str:
    """Where a decision leads: the next item of the queue under the curator's filters, saying which item was just
    decided (a way back to it), or the queue itself after its last item."""
    model = queue_model(item.project) if filters.needs_model else None
    following = review_queue_next(project=item.project, after=position, filters=filters, model=model)
    if following is None:
        return _with_query(reverse("curation:review_queue", args=[item.project_id]), filters.query())
    return _with_query(
        reverse("curation:adjudicate", args=[item.project_id, following]), filters.query(decided=item.pk)
    )


def _queue_links(request: HttpRequest, item: Item, filters: QueueFilters) -> dict[str, Any]:
    """The way back to the queue (as the curator left it), the item after this one, and the item just decided."""
    query = filters.query()
    model = queue_model(item.project) if filters.needs_model else None
    following = review_queue_next(project=item.project, after=QueuePosition.of(item), filters=filters, model=model)
    decided = project_item_named(project=item.project, value=request.GET.get("decided", ""))
    return {
        "queue_url": _with_query(reverse("curation:review_queue", args=[item.project_id]), query),
        "next_url": _adjudicate_url(item.project_id, following, query),
        "decided": decided,
        "decided_url": _adjudicate_url(item.project_id, decided.pk if decided else None, query),
    }


def _adjudicate_url(project_id: int, item_id: int | None, query: str) -> str:
    return "" if item_id is None else _with_query(reverse("curation:adjudicate", args=[project_id, item_id]), query)


@require_http_methods(["GET", "POST"])
@login_required
def adjudicate(request: HttpRequest, project_id: int, item_id: int) -> HttpResponse:
    item = item_for_curator(request.user, project_id, item_id)
    definition = label_schema_current(project=item.project).definition
    labels = strength_labels(definition) if definition["preference"]["enabled"] else {}
    filters = QueueFilters.from_query(request.GET)
    form = AdjudicationForm(request.POST or None, labels=labels, attributes=definition["attributes"])
    if request.method == "POST" and form.is_valid():
        position = QueuePosition.of(item)  # where it stood in the queue before the decision moves it
        try:
            adjudication_record(item=item, curator=request.user, **form.decision_arguments())  # type: ignore[arg-type]
        except AdjudicationError as error:
            form.add_service_errors(error.errors)
        else:
            messages.success(
                request, f"Item {item.number}: {Adjudication.Decision(form.cleaned_data['decision']).label}."
            )
            return redirect(_after_decision(item, filters, position))
    views = _annotation_views(item, definition)
    consensus = item_consensus(item=item)
    context = {
        "project": item.project,
        "item": item,
        "annotations": views,
        "ratings_grid": _ratings_grid(views),
        "consensus": consensus,
        "model_view": item_model_view(item),
        "flags": ItemFlag.objects.filter(item=item).select_related("raised_by").order_by("-created_at"),
        "history": Adjudication.objects.filter(item=item).select_related("curator"),
        "form": form,
        "rating_rows": form.rating_rows(consensus.ratings_helpsteer2),
        "scale": SCALES[definition["preference"]["scale"]] if labels else None,
        **_queue_links(request, item, filters),
        **_nav_context(request, item.project),
    }
    return render(request, "curation/adjudicate.html", context, status=422 if form.errors else 200)


@require_POST
@login_required
def item_flag(request: HttpRequest, project_id: int, item_id: int) -> HttpResponse:
    item = item_for_annotator(request.user, project_id, item_id)
    form = FlagForm(request.POST)
    error = ""
    if form.is_valid():
        try:
            item_flag_raise(item=item, user=request.user, reason=form.cleaned_data["reason"])  # type: ignore[arg-type]
        except AdjudicationError as problem:
            error = str(problem)
    else:
        error = "reason: say what is wrong with this item (at most 500 characters)"
    if not request.htmx:  # type: ignore[attr-defined]
        if error:
            messages.error(request, f"Not flagged: {error}")
        else:
            messages.success(request, f"Item {item.number} flagged for review.")
        return redirect("annotate:label", project_id=item.project_id)
    context = {"project": item.project, "item": item, "error": error, "flagged": not error}
    return render(request, "curation/review_flag.html", context, status=422 if error else 200)
