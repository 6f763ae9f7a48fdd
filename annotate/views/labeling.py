"""The labeling page: one item at a time, the next one swapped in by htmx after each submit or skip.

Leases are taken and renewed by POST only (label_next, submit, skip), so that a link followed from another site
changes nothing: a GET shows the item the annotator already holds, or else a button that takes the next one.

The page asks for whatever the project's current label schema asks for (a preference, attribute ratings per
response, error spans and missing information, corrected responses), all posted in one form and saved in one
transaction by annotation_submit. A refused submit shows the same item again, as entered, with each error next
to its field; one the queue did not hand out (409), or from a paused annotator (403), shows a card saying so.
"""

import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from annotate.access import item_for_annotator, project_for_member, role_in_project
from annotate.forms import RESPONSE_FIELD, AnnotationForm, SkipForm
from annotate.labels import SIDES, strength_labels
from annotate.models import Assignment, Item, Project, Role
from annotate.selectors import annotator_is_paused, label_schema_current, lease_live, progress_for_annotator
from annotate.selectors_home import project_filled_by_imports
from annotate.services.labeling import (
    AnnotatorPaused,
    LabelingError,
    OutsideQueue,
    SubmitResult,
    annotation_submit,
    assignment_next,
    assignment_skip,
    item_handed_out_check,
)
from concord.errors import FieldError, errors_by_path
from concord.forms import form_add_errors

ENTRY_PATH = re.compile(r"^(?P<kind>spans|missing)\[(?P<index>\d+)\]")
# Characters the HTML parser changes in text (CRLF becomes LF, NUL is dropped). A response holding any is also
# sent as JSON, so that label.js counts span offsets in the stored text rather than in what the parser kept.
PARSER_ALTERED = re.compile(r"[\r\x00]")


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


class PlacedErrors:
    """Error messages by the path they name, taken out by the parts of the card that show them."""

    def __init__(self, errors: list[FieldError]) -> None:
        self.by_path: dict[str, list[str]] = errors_by_path(error for error in errors if error.path)

    def take(self, path: str) -> list[str]:
        return self.by_path.pop(path, [])

    def take_under(self, prefix: str) -> list[str]:
        """Errors below a path that has no place of its own (an unknown attribute), with their paths."""
        paths = [path for path in self.by_path if path.startswith(prefix)]
        return [f"{path[len(prefix) :]}: {message}" for path in paths for message in self.by_path.pop(path)]

    def take_entries(self, kind: str, entries: list[Any], side: str) -> list[str]:
        """Errors about spans[i] or missing[i] where entry i is about this response."""
        taken = []
        for path in list(self.by_path):
            match = ENTRY_PATH.match(path)
            if not match or match["kind"] != kind:
                continue
            index = int(match["index"])
            entry = entries[index] if index < len(entries) else None
            if isinstance(entry, Mapping) and entry.get("response") == side:
                taken += [f"{path}: {message}" for message in self.by_path.pop(path)]
        return taken


@dataclass(frozen=True)
class Notice:
    """What the page says about the last write; a warning when it did not do what the annotator asked."""

    text: str
    warning: bool = False


@dataclass
class RatingRow:
    name: str
    label: str
    description: str
    options: list[tuple[int, bool]]  # (value, checked)
    errors: list[str]
    flagged: bool  # has an error, or is one of the rows the annotator still has to rate


@dataclass
class MissingOption:
    name: str
    label: str
    description: str
    checked: bool


@dataclass
class ResponsePanel:
    side: str
    text: str
    exact_json: str  # the text as JSON when the HTML parser would alter it, else empty
    position: str  # "2 of 4" for a pair drawn from a group
    ratings: list[RatingRow]
    rating_errors: list[str]
    missing: list[MissingOption]
    missing_errors: list[str]
    span_errors: list[str]
    correction: str | None  # None when the schema asks for no corrections
    correction_errors: list[str]


def _posted_spans(data: QueryDict) -> list[Any]:
    """The spans as posted, for placing their errors; nothing when they are not a JSON list."""
    try:
        spans = json.loads(data.get("spans_json") or "[]")
    except (ValueError, RecursionError):
        return []
    return spans if isinstance(spans, list) else []


def _posted_missing(data: QueryDict) -> list[dict[str, str]]:
    """The ticked missing-information boxes in the order AnnotationForm reads them, which errors count in."""
    entries = []
    for key in data:
        match = RESPONSE_FIELD.match(key)
        if match and match["kind"] == "missing" and not match["name"]:
            entries += [{"response": match["side"], "category": kind} for kind in data.getlist(key)]
    return entries


def _pair_in_group(item: Item) -> tuple[int, int, int] | None:
    """For a pair drawn from a group: which responses these are, counted from 1, and how many it has."""
    if item.group is None or item.response_a_index is None or item.response_b_index is None:
        return None
    return item.response_a_index + 1, item.response_b_index + 1, len(item.group.responses)


def _rating_rows(
    side: str, definition: Mapping[str, Any], data: QueryDict, errors: PlacedErrors, *, unrated_flagged: bool
) -> list[RatingRow]:
    rows = []
    for attribute in definition["attributes"]:
        options = [
            (value, data.get(f"rating-{side}-{attribute['name']}") == str(value))
            for value in range(attribute["min"], attribute["max"] + 1)
        ]
        row_errors = errors.take(f"ratings.{side}.{attribute['name']}")
        unrated = not any(checked for _, checked in options)
        rows.append(
            RatingRow(
                name=attribute["name"],
                label=_label(attribute["name"]),
                description=attribute.get("description", ""),
                options=options,
                errors=row_errors,
                flagged=bool(row_errors) or (unrated_flagged and unrated),
            )
        )
    return rows


def _panel(
    *, side: str, item: Item, definition: Mapping[str, Any], data: QueryDict, errors: PlacedErrors, position: str
) -> ResponsePanel:
    text = item.response_a if side == "a" else item.response_b
    rating_errors = errors.take(f"ratings.{side}")  # "rate helpfulness, ... for response A"
    ticked = data.getlist(f"missing-{side}")
    kinds = definition["spans"].get("missing", []) if definition["spans"]["enabled"] else []
    return ResponsePanel(
        side=side,
        text=text,
        exact_json=json.dumps(text) if PARSER_ALTERED.search(text) else "",
        position=position,
        ratings=_rating_rows(side, definition, data, errors, unrated_flagged=bool(rating_errors)),
        rating_errors=rating_errors + errors.take_under(f"ratings.{side}."),
        missing=[
            MissingOption(
                name=kind["name"],
                label=_label(kind["name"]),
                description=kind.get("description", ""),
                checked=kind["name"] in ticked,
            )
            for kind in kinds
        ],
        missing_errors=errors.take_entries("missing", _posted_missing(data), side),
        span_errors=errors.take_entries("spans", _posted_spans(data), side),
        correction=data.get(f"correction-{side}", "") if definition["correction"]["enabled"] else None,
        correction_errors=errors.take(f"corrections.{side}"),
    )


def _preference_context(definition: Mapping[str, Any], data: QueryDict, errors: PlacedErrors) -> dict[str, Any]:
    preference = definition["preference"]
    choices = strength_labels(definition)
    minimum = preference.get("justification_min_chars", 0)
    if preference["justification"] == "required":
        rule = f"required, at least {minimum} characters" if minimum else "required"
    else:
        rule = f"optional; at least {minimum} characters if given" if minimum else "optional"
    return {
        "preference": preference,
        # Keys 1..n pick strengths left to right: A's side first.
        "strength_buttons": [
            (key, value, label, "a" if value < 0 else "b" if value > 0 else "tie")
            for key, (value, label) in enumerate(choices.items(), start=1)
        ],
        "strength_keys": f"1–{len(choices)}",
        "chosen_strength": data.get("strength"),
        "justification_rule": rule,
        "justification_required": preference["justification"] == "required",
        "justification_min": minimum,
        "strength_errors": errors.take("strength"),
        "justification_errors": errors.take("justification"),
    }


def _conversation_context(prompt: list[Any]) -> dict[str, Any]:
    """The prompt split for showing: the turn being answered (the last user turn), what follows it and the turn
    just before it stay in view; earlier turns fold away, so that a long conversation never hides the question."""
    user_turns = [
        index for index, turn in enumerate(prompt) if isinstance(turn, Mapping) and turn.get("role") == "user"
    ]
    answered = user_turns[-1] if user_turns else len(prompt) - 1
    start = max(answered - 1, 0)
    return {"earlier_turns": prompt[:start], "latest_turns": prompt[start:]}


def _labeling_context(item: Item, form: AnnotationForm | None, errors: list[FieldError]) -> dict[str, Any]:
    definition = label_schema_current(project=item.project).definition
    data = form.data if form is not None and isinstance(form.data, QueryDict) else QueryDict()
    placed = PlacedErrors(errors)
    pair = _pair_in_group(item)
    positions = {"a": f"{pair[0]} of {pair[2]}", "b": f"{pair[1]} of {pair[2]}"} if pair else {"a": "", "b": ""}
    panels = [
        _panel(side=side, item=item, definition=definition, data=data, errors=placed, position=positions[side])
        for side in SIDES
    ]
    spans = definition["spans"]
    categories = spans.get("categories", []) if spans["enabled"] else []
    return {
        **_preference_context(definition, data, placed),
        **_conversation_context(item.prompt),
        "panels": panels,
        "categories": [{**category, "label": _label(category["name"])} for category in categories],
        "spans_json": data.get("spans_json", "[]"),
        "pair_position": f"Response {pair[0]} vs {pair[1]} of {pair[2]}" if pair else "",
    }


def _render_card(
    request: HttpRequest,
    *,
    project: Project,
    item: Item | None,
    form: AnnotationForm | None = None,
    errors: list[FieldError] | None = None,
    skip_form: SkipForm | None = None,
    notice: Notice | None = None,
    take_next: bool = False,
    take_at_once: bool = False,
    status: int = 200,
) -> HttpResponse:
    """The whole labeling page, or only its item card for htmx requests. Without an item, `take_next` offers a
    button that takes the next one (label_next), pressed by htmx as the card loads with `take_at_once`."""
    context = {
        "project": project,
        "item": item,
        "form": form,
        "errors": errors or [],
        "skip_form": skip_form,
        "notice": notice,
        "submission_uuid": form.data.get("submission_uuid") if form is not None else uuid.uuid4(),
        "progress": progress_for_annotator(project=project, annotator=request.user),  # type: ignore[arg-type]
        "paused": item is None and annotator_is_paused(project=project, annotator=request.user),  # type: ignore[arg-type]
        "take_next": take_next,
        "take_at_once": take_at_once,
    }
    if item is not None:
        context.update(_labeling_context(item, form, errors or []))
    elif not take_next and not context["paused"] and project_filled_by_imports(project=project):
        context["filled_by_import"] = True
        context["can_edit_settings"] = role_in_project(request.user, project) == Role.ADMIN
    template = "annotate/label.html#item-card" if request.htmx else "annotate/label.html"  # type: ignore[attr-defined]
    return render(request, template, context, status=status)


def _visit_from_this_site(request: HttpRequest) -> bool:
    """A page asked for from one of our own pages, or by the user directly (typed, a bookmark, a reload). A link
    on another site is not (Sec-Fetch-Site: cross-site); nor is a browser that does not say."""
    return request.headers.get("Sec-Fetch-Site") in ("same-origin", "none")


@require_GET
@login_required
@never_cache  # Back and Forward fetch the page again rather than show an item already submitted
def label(request: HttpRequest, project_id: int) -> HttpResponse:
    """The item this annotator holds a live lease on, as it is: a GET takes and renews nothing. Without one, the
    page offers the next item; it is taken by htmx as the page loads, unless another site sent the visitor here,
    who then takes it with one click."""
    project = project_for_member(request.user, project_id)
    lease = lease_live(project=project, annotator=request.user)  # type: ignore[arg-type]
    if lease is None or annotator_is_paused(project=project, annotator=request.user):  # type: ignore[arg-type]
        return _render_card(
            request, project=project, item=None, take_next=True, take_at_once=_visit_from_this_site(request)
        )
    return _render_card(request, project=project, item=lease.item)


@require_POST
@login_required
def label_next(request: HttpRequest, project_id: int) -> HttpResponse:
    """Take the next item, or renew the lease on the one held. htmx gets its card; a plain form post is sent to
    the page (post/redirect/get), which shows the item now leased, or the card saying why there is none."""
    project = project_for_member(request.user, project_id)
    item = assignment_next(project=project, annotator=request.user)  # type: ignore[arg-type]
    if item is not None and not request.htmx:  # type: ignore[attr-defined]
        return redirect("annotate:label", project_id=project.pk)
    return _render_card(request, project=project, item=item)


def _seconds_spent(form: AnnotationForm, *, item: Item, request: HttpRequest) -> float:
    """The page's own timer when it sent one; otherwise the time since the item was leased."""
    seconds = form.cleaned_data.get("seconds_spent")
    if seconds is not None:
        return float(seconds)
    lease = Assignment.objects.filter(item=item, annotator_id=request.user.pk).first()
    return (timezone.now() - lease.leased_at).total_seconds() if lease else 0.0


def _after_write(request: HttpRequest, *, project: Project, notice: Notice) -> HttpResponse:
    """The next item is leased here, in the POST; htmx gets its card in place, a plain form post is redirected
    to the page (post/redirect/get), which shows it."""
    item = assignment_next(project=project, annotator=request.user)  # type: ignore[arg-type]
    if not request.htmx:  # type: ignore[attr-defined]
        # The notice survives the redirect as a message, so a plain form post is told the same.
        (messages.warning if notice.warning else messages.success)(request, notice.text)
        return redirect("annotate:label", project_id=project.pk)
    return _render_card(request, project=project, item=item, notice=notice)


def _refused(request: HttpRequest, *, project: Project, error: LabelingError, what: str) -> HttpResponse:
    """A submit or skip of an item that is not this annotator's to answer (409), or from a paused annotator
    (403): nothing was written, and the card says so and offers the next item (the paused card, none)."""
    status = 403 if isinstance(error, AnnotatorPaused) else 409
    notice = Notice(f"Not {what}: {error}", warning=True)
    return _render_card(request, project=project, item=None, notice=notice, take_next=True, status=status)


@require_POST
@login_required
def submit(request: HttpRequest, project_id: int, item_id: int) -> HttpResponse:
    item = item_for_annotator(request.user, project_id, item_id)
    form = AnnotationForm(request.POST, schema=label_schema_current(project=item.project).definition)
    if not form.is_valid():
        try:
            item_handed_out_check(item=item, annotator=request.user)  # type: ignore[arg-type]
        except (AnnotatorPaused, OutsideQueue) as error:
            return _refused(request, project=item.project, error=error, what="saved")
        return _render_card(request, project=item.project, item=item, form=form, errors=form.error_list(), status=422)
    try:
        result = annotation_submit(
            item=item,
            annotator=request.user,  # type: ignore[arg-type]
            labels=form.labels(),
            seconds_spent=_seconds_spent(form, item=item, request=request),
            submission_uuid=form.cleaned_data["submission_uuid"],
        )
    except (AnnotatorPaused, OutsideQueue) as error:
        return _refused(request, project=item.project, error=error, what="saved")
    except LabelingError as error:
        return _render_card(request, project=item.project, item=item, form=form, errors=error.errors, status=422)
    return _after_write(request, project=item.project, notice=_submit_notice(result))


def _submit_notice(result: SubmitResult) -> Notice:
    """What really happened to a submit: saved, or an earlier answer kept (a page shown again by Back/Forward)."""
    if result.created:
        return Notice("Saved.")
    number = result.annotation.item.number
    if result.same_answer:
        return Notice(f"Already saved: item {number} was submitted before with this answer.")
    when = timezone.localtime(result.annotation.created_at)
    return Notice(
        f"Not saved: you already answered item {number} on {when:%d %b %Y at %H:%M}. "
        "Your first answer stands; the one you just gave was discarded.",
        warning=True,
    )


@require_POST
@login_required
def skip(request: HttpRequest, project_id: int, item_id: int) -> HttpResponse:
    item = item_for_annotator(request.user, project_id, item_id)
    skip_form = SkipForm(request.POST)
    if not skip_form.is_valid():
        try:
            item_handed_out_check(item=item, annotator=request.user)  # type: ignore[arg-type]
        except (AnnotatorPaused, OutsideQueue) as error:
            return _refused(request, project=item.project, error=error, what="skipped")
        return _render_card(request, project=item.project, item=item, skip_form=skip_form, status=422)
    try:
        assignment_skip(item=item, annotator=request.user, reason=skip_form.cleaned_data["reason"])  # type: ignore[arg-type]
    except (AnnotatorPaused, OutsideQueue) as error:
        return _refused(request, project=item.project, error=error, what="skipped")
    except LabelingError as error:
        form_add_errors(skip_form, error.errors)
        return _render_card(request, project=item.project, item=item, skip_form=skip_form, status=422)
    return _after_write(request, project=item.project, notice=Notice("Skipped."))
