"""The labeling page: one item at a time, the next one swapped in by htmx after each submit or skip."""

import uuid

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from annotate.access import item_for_annotator, project_for_member
from annotate.constants import STRENGTH_LABELS
from annotate.forms import AnnotationForm, SkipForm
from annotate.labels import Labels
from annotate.models import Assignment, Item, Project
from annotate.selectors import progress_for_annotator
from annotate.services.labeling import LabelingError, annotation_submit, assignment_next, assignment_skip

# Keys 1-7 map onto strengths -3..+3, left to right.
STRENGTH_BUTTONS = [(key, value, STRENGTH_LABELS[value]) for key, value in enumerate(range(-3, 4), start=1)]


def _render_card(
    request: HttpRequest,
    *,
    project: Project,
    item: Item | None,
    form: AnnotationForm | None = None,
    skip_form: SkipForm | None = None,
    notice: str = "",
    status: int = 200,
) -> HttpResponse:
    """The whole labeling page, or only its item card for htmx requests."""
    context = {
        "project": project,
        "item": item,
        "form": form,
        "skip_form": skip_form,
        "notice": notice,
        "submission_uuid": form.data.get("submission_uuid") if form is not None else uuid.uuid4(),
        "strength_buttons": STRENGTH_BUTTONS,
        "chosen_strength": form.data.get("strength") if form is not None else None,
        "progress": progress_for_annotator(project=project, annotator=request.user),  # type: ignore[arg-type]
    }
    template = "annotate/label.html#item-card" if request.htmx else "annotate/label.html"  # type: ignore[attr-defined]
    return render(request, template, context, status=status)


@require_GET
@login_required
def label(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id)
    item = assignment_next(project=project, annotator=request.user)  # type: ignore[arg-type]
    return _render_card(request, project=project, item=item)


def _seconds_spent(form: AnnotationForm, *, item: Item, request: HttpRequest) -> float:
    """The page's own timer when it sent one; otherwise the time since the item was leased."""
    seconds = form.cleaned_data.get("seconds_spent")
    if seconds is not None:
        return float(seconds)
    lease = Assignment.objects.filter(item=item, annotator_id=request.user.pk).first()
    return (timezone.now() - lease.leased_at).total_seconds() if lease else 0.0


def _after_write(request: HttpRequest, *, project: Project, notice: str) -> HttpResponse:
    """htmx gets the next item's card in place; a plain form post is redirected (post/redirect/get)."""
    if not request.htmx:  # type: ignore[attr-defined]
        return redirect("annotate:label", project_id=project.pk)
    item = assignment_next(project=project, annotator=request.user)  # type: ignore[arg-type]
    return _render_card(request, project=project, item=item, notice=notice)


@require_POST
@login_required
def submit(request: HttpRequest, project_id: int, item_id: int) -> HttpResponse:
    item = item_for_annotator(request.user, project_id, item_id)
    form = AnnotationForm(request.POST)
    if not form.is_valid():
        return _render_card(request, project=item.project, item=item, form=form, status=422)
    try:
        annotation_submit(
            item=item,
            annotator=request.user,  # type: ignore[arg-type]
            labels=Labels(strength=form.cleaned_data["strength"], justification=form.cleaned_data["justification"]),
            seconds_spent=_seconds_spent(form, item=item, request=request),
            submission_uuid=form.cleaned_data["submission_uuid"],
        )
    except LabelingError as error:
        form.add_error(None, str(error))
        return _render_card(request, project=item.project, item=item, form=form, status=422)
    return _after_write(request, project=item.project, notice="Saved.")


@require_POST
@login_required
def skip(request: HttpRequest, project_id: int, item_id: int) -> HttpResponse:
    item = item_for_annotator(request.user, project_id, item_id)
    skip_form = SkipForm(request.POST)
    if not skip_form.is_valid():
        return _render_card(request, project=item.project, item=item, skip_form=skip_form, status=422)
    try:
        assignment_skip(item=item, annotator=request.user, reason=skip_form.cleaned_data["reason"])  # type: ignore[arg-type]
    except LabelingError as error:
        skip_form.add_error(None, str(error))
        return _render_card(request, project=item.project, item=item, skip_form=skip_form, status=422)
    return _after_write(request, project=item.project, notice="Skipped.")
