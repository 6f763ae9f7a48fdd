"""Curators browse items, see their annotations, and mark gold items with their expected answers."""

import json

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate.access import item_for_curator, project_for_member
from annotate.forms import RatingsField
from annotate.labels import LabelError
from annotate.models import Item, Role
from annotate.selectors import gold_scores, item_annotations, items_page
from annotate.services.gold import gold_answer_remove, gold_answer_set
from concord.forms import form_add_errors
from training.selectors import item_model_view

ITEMS_PER_PAGE = 50


class GoldForm(forms.Form):
    preference_sign = forms.TypedChoiceField(
        choices=[(-1, "A is better"), (0, "Tie"), (1, "B is better")], coerce=int, label="Expected preference"
    )
    ratings = RatingsField(
        label="Expected ratings (optional)",
        help_text='JSON, e.g. {"a": {"correctness": 4}, "b": {"correctness": 1}}; within one point counts as right.',
    )
    note = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))


@require_GET
@login_required
def item_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
    gold_only = request.GET.get("gold") == "1"
    page = items_page(project=project, gold_only=gold_only, page=request.GET.get("page"), per_page=ITEMS_PER_PAGE)
    context = {"project": project, "page": page, "gold_only": gold_only, "scores": gold_scores(project=project)}
    return render(request, "annotate/items.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def item_detail(request: HttpRequest, project_id: int, item_id: int) -> HttpResponse:
    item = item_for_curator(request.user, project_id, item_id)
    answer = getattr(item, "gold_answer", None)
    initial = {"preference_sign": answer.preference_sign, "note": answer.note} if answer else None
    if answer and answer.ratings:
        initial = {**(initial or {}), "ratings": json.dumps(answer.ratings)}
    form = GoldForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            gold_answer_set(item=item, created_by=request.user, **form.cleaned_data)  # type: ignore[arg-type]
        except LabelError as error:
            form_add_errors(form, error.errors, fallback="ratings")
        else:
            messages.success(request, "Saved as a gold item: it will be mixed into annotators' queues.")
            return redirect("annotate:item_detail", project_id=project_id, item_id=item.pk)
    context = {
        "project": item.project,
        "item": item,
        "annotations": item_annotations(item=item),
        "form": form,
        "model_view": item_model_view(item),
    }
    return render(request, "annotate/item_detail.html", context, status=422 if form.errors else 200)


@require_POST
@login_required
def item_gold_remove(request: HttpRequest, project_id: int, item_id: int) -> HttpResponse:
    item: Item = item_for_curator(request.user, project_id, item_id)
    gold_answer_remove(item=item)
    messages.success(request, "No longer a gold item.")
    return redirect("annotate:item_detail", project_id=project_id, item_id=item.pk)
