"""Project admins edit the label schema. Every saved change becomes a new version."""

import json

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
from concord.errors import FieldError


class SchemaForm(forms.Form):
    definition = forms.CharField(
        strip=False, widget=forms.Textarea(attrs={"rows": 30, "spellcheck": "false", "class": "code"})
    )

    def clean_definition(self) -> object:
        try:
            return json.loads(self.cleaned_data["definition"])
        except json.JSONDecodeError as error:
            raise forms.ValidationError(
                f"Not valid JSON: {error.msg} at line {error.lineno}, column {error.colno}."
            ) from None


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
