"""Project admins edit the label schema. Every saved change becomes a new version."""

import json
import math

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from annotate.access import project_for_member
from annotate.labels import PRESETS, LabelError
from annotate.models import LabelSchema, Role
from annotate.selectors import label_schema_current
from annotate.services.schemas import label_schema_set
from annotate.text import unstorable_in
from concord.errors import FieldError


class SchemaForm(forms.Form):
    definition = forms.CharField(
        strip=False, widget=forms.Textarea(attrs={"rows": 30, "spellcheck": "false", "class": "code"})
    )

    def clean_definition(self) -> object:
        try:
            definition = json.loads(self.cleaned_data["definition"], parse_constant=_no_constant, parse_float=_finite)
        except json.JSONDecodeError as error:
            raise forms.ValidationError(
                f"Not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}."
            ) from None
        except _UnstorableNumber as error:
            raise forms.ValidationError(f"It holds {error}, which cannot be stored.") from None
        except (ValueError, RecursionError):  # a number of thousands of digits, nesting a thousand levels deep
            raise forms.ValidationError("Not a label schema: a number or the nesting is far too large.") from None
        # "\u0000" is valid JSON, but no database column holds the character.
        if (found := unstorable_in(definition)) is not None:
            where = f"{found.path} holds" if found.path else "It holds"
            raise forms.ValidationError(f"{where} {found.problem}, which cannot be stored; remove it.")
        return definition


class _UnstorableNumber(ValueError):
    """Python's json reads NaN and Infinity (and 1e999, as infinity); PostgreSQL's jsonb holds neither."""


def _no_constant(name: str) -> object:
    raise _UnstorableNumber(name)


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _UnstorableNumber(f"the number {text[:40]}")
    return value


def _pretty(definition: object) -> str:
    return json.dumps(definition, indent=2, ensure_ascii=False)


@require_http_methods(["GET", "POST"])
@login_required
def schema_edit(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    current = label_schema_current(project=project)
    preset = request.GET.get("preset")
    initial = _pretty(PRESETS.get(preset or "", current.definition))
    form = SchemaForm(request.POST or None, initial={"definition": initial})
    schema_errors: list[FieldError] = []
    if request.method == "POST" and form.is_valid():
        try:
            definition = form.cleaned_data["definition"]
            saved = label_schema_set(project=project, definition=definition, created_by=request.user)  # type: ignore[arg-type]
        except LabelError as error:
            schema_errors = error.errors
        else:
            messages.success(request, f"Schema version {saved.version} is now in use.")
            return redirect("annotate:schema_edit", project_id=project.pk)
    versions = (
        LabelSchema.objects.filter(project=project)
        .annotate(annotations=Count("annotation"))
        .select_related("created_by")
        .order_by("-version")
    )
    context = {
        "project": project,
        "form": form,
        "schema_errors": schema_errors,
        "current": current,
        "versions": versions,
        "presets": list(PRESETS),
    }
    return render(request, "annotate/schema.html", context, status=422 if form.errors or schema_errors else 200)
