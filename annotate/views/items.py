"""Curators find items (search, filters, sorting), see each one whole (annotations, decisions, model scores, the
synergy decision), step to the previous or next item of the list they came from, and mark gold items.

The item page reads curation's decisions and training's scores through their selectors (curation.selectors_items,
training.selectors_items): a view may read a later app's selectors; annotate's own models, services and selectors
never import them."""

import json
from dataclasses import dataclass

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate import rules
from annotate.access import item_for_curator, project_for_member
from annotate.forms import RatingsField
from annotate.forms_items import ItemFilterForm
from annotate.labels import LabelError
from annotate.models import Item, Project, Role
from annotate.rules import ItemState
from annotate.selectors import gold_scores, import_batches_for_project, item_annotations, item_label_summary
from annotate.selectors_items import (
    SCAN_WINDOW,
    ItemFilters,
    Window,
    item_neighbours,
    item_window,
    items_filtered,
    items_list_page,
    prompt_preview,
    prompt_turns,
)
from annotate.services.gold import gold_answer_remove, gold_answer_set
from concord.forms import form_add_errors
from curation.selectors_items import item_decisions, items_flagged, items_in_state, latest_decisions, open_flagged
from training.selectors import item_model_view
from training.selectors_items import item_pair_decision, item_score


@require_GET
@login_required
def item_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
    filters = ItemFilterForm(request.GET).filters()
    window = item_window(project=project, filters=filters)
    page = items_list_page(_listed(project, filters, window), sort=filters.sort, page=filters.page)
    context = {
        "project": project,
        "filters": filters,
        "form": ItemFilterForm(request.GET),
        "window": window,
        "page": page,
        "rows": _rows(project, page.items, filters),
        "columns": _columns(filters),
        "states": [state.value for state in ItemState],
        "batches": import_batches_for_project(project)
        .select_related(None)
        .only("pk", "file_name", "created_at")[:MAX_BATCHES_LISTED],
        "scores": gold_scores(project=project),
        "scan_window": f"{SCAN_WINDOW:,}",
        "window_first": window.start or _first_number(project),
        "next_window_query": filters.query(start=window.next_start or 0, page=1),
        "first_window_query": filters.query(start=0, page=1),
        "previous_query": filters.query(page=page.number - 1),
        "next_query": filters.query(page=page.number + 1),
    }
    return render(request, "annotate/items.html", context)


def _first_number(project: Project) -> int:
    return Item.objects.filter(project=project).order_by("number").values_list("number", flat=True).first() or 0


MAX_BATCHES_LISTED = 100


def _listed(project: Project, filters: ItemFilters, window: Window) -> QuerySet[Item]:
    """The list's items: annotate's filters, then curation's (states need decisions, flags are curation's)."""
    items = items_filtered(project=project, filters=filters, window=window)
    if filters.state:
        items = items_in_state(items, project=project, state=filters.state, within=window.within)
    if filters.flagged:
        items = items_flagged(items, project=project, within=window.within)
    return items


@dataclass(frozen=True)
class ItemRow:
    item: Item
    prompt: str
    turns: int
    state: str
    wanted: int
    flagged: bool
    query: str  # the list's query string, for the item page's previous and next links


def _rows(project: Project, items: list[Item], filters: ItemFilters) -> list[ItemRow]:
    ids = [item.pk for item in items]
    decisions, flagged = latest_decisions(ids), open_flagged(ids)
    query = filters.query()
    return [
        ItemRow(
            item=item,
            prompt=prompt_preview(item.prompt),
            turns=prompt_turns(item.prompt),
            state=rules.item_state(item_label_summary(item, overlap=project.overlap), decisions.get(item.pk)),
            wanted=project.overlap + item.extra_overlap,
            flagged=item.pk in flagged,
            query=query,
        )
        for item in items
    ]


@dataclass(frozen=True)
class Column:
    label: str
    query: str  # the list sorted by this column: ascending, or descending when it is sorted ascending already
    sorted: str  # "ascending", "descending" or ""


def _columns(filters: ItemFilters) -> dict[str, Column]:
    columns = {}
    for key, label in (("number", "#"), ("source", "Source"), ("annotations", "Annotations")):
        sorted_ = {key: "ascending", f"-{key}": "descending"}.get(filters.sort, "")
        toggled = f"-{key}" if sorted_ == "ascending" else key
        columns[key] = Column(label, filters.query(sort=toggled, page=1), sorted_)
    return columns


class GoldForm(forms.Form):
    # Radio buttons with none ticked: a curator making an item gold picks the answer; nothing is suggested.
    preference_sign = forms.TypedChoiceField(
        choices=[(-1, "A is better"), (0, "Tie"), (1, "B is better")],
        coerce=int,
        label="Expected preference",
        widget=forms.RadioSelect,
    )
    ratings = RatingsField(
        label="Expected ratings (optional)",
        help_text='JSON, e.g. {"a": {"correctness": 4}, "b": {"correctness": 1}}; within one point counts as right.',
    )
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


@require_http_methods(["GET", "POST"])
@login_required
def item_detail(request: HttpRequest, project_id: int, item_id: int) -> HttpResponse:
    item = item_for_curator(request.user, project_id, item_id)
    answer = getattr(item, "gold_answer", None)
    initial = {"preference_sign": answer.preference_sign, "note": answer.note} if answer else None
    if answer and answer.ratings:
        initial = {**(initial or {}), "ratings": json.dumps(answer.ratings)}
    form = GoldForm(request.POST or None, initial=initial)
    filters = ItemFilterForm(request.GET).filters()
    if request.method == "POST" and form.is_valid():
        try:
            gold_answer_set(item=item, created_by=request.user, **form.cleaned_data)  # type: ignore[arg-type]
        except LabelError as error:
            form_add_errors(form, error.errors, fallback="ratings")
        else:
            messages.success(request, "Saved as a gold item: it will be mixed into annotators' queues.")
            return redirect(_item_url(item.project, item.pk, filters))
    window = item_window(project=item.project, filters=filters)
    neighbours = item_neighbours(_listed(item.project, filters, window), sort=filters.sort, item=item)
    context = {
        "project": item.project,
        "item": item,
        "annotations": item_annotations(item=item),
        "form": form,
        "model_view": item_model_view(item),
        "score": item_score(item),
        "pair_decision": item_pair_decision(item),
        "decisions": item_decisions(item=item),
        "list_query": filters.query(),
        "previous_url": _item_url(item.project, neighbours.previous, filters) if neighbours.previous else "",
        "next_url": _item_url(item.project, neighbours.next, filters) if neighbours.next else "",
    }
    return render(request, "annotate/item_detail.html", context, status=422 if form.errors else 200)


def _item_url(project: Project, item_id: int, filters: ItemFilters) -> str:
    query = filters.query()
    url = reverse("annotate:item_detail", args=[project.pk, item_id])
    return f"{url}?{query}" if query else url


@require_POST
@login_required
def item_gold_remove(request: HttpRequest, project_id: int, item_id: int) -> HttpResponse:
    item: Item = item_for_curator(request.user, project_id, item_id)
    gold_answer_remove(item=item)
    messages.success(request, "No longer a gold item.")
    return redirect("annotate:item_detail", project_id=project_id, item_id=item.pk)
