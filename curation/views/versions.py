"""Curators build dataset versions, freeze them, and export them; annotators cannot."""

from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseStopPolling

from annotate.access import project_for_member, role_in_project
from annotate.models import Project, Role
from annotate.selectors import project_is_small
from concord.forms import form_add_errors
from curation.aggregation import CONSENSUS_RULES
from curation.models import DatasetRow, DatasetVersion, ExportJob
from curation.selectors_versions import (
    curated_projects,
    export_for_member,
    export_jobs_for_version,
    parent_choices,
    version_for_curator,
    version_row_count,
    version_rows_preview,
    version_tables,
    versions_for_project,
)
from curation.services.version_exports import export_file_name, export_job_create
from curation.services.version_rows import DEFAULT_STATES, STATES, VersionFilters
from curation.services.versions import VersionError, dataset_version_create, dataset_version_freeze_start
from training.selectors import runs_for_version

SEED_MAX = 2**31 - 1
STATE_LABELS = {
    "agreed": "Agreed: the annotators agree",
    "adjudicated": "Adjudicated: a curator's final label",
    "disputed": "Disputed too: annotators disagree and no curator has decided (labelled by the consensus rule)",
}


class VersionForm(forms.Form):
    name = forms.CharField(max_length=200)
    projects = forms.ModelMultipleChoiceField(
        queryset=Project.objects.none(),
        widget=forms.CheckboxSelectMultiple,
        help_text="Projects the rows are drawn from (those you curate).",
    )
    states = forms.MultipleChoiceField(
        choices=[(s, STATE_LABELS[s]) for s in STATES],
        widget=forms.CheckboxSelectMultiple,
        initial=list(DEFAULT_STATES),
        help_text="Disputed items stay out unless you tick them: adjudicate them in the review queue instead.",
    )
    consensus = forms.ChoiceField(
        choices=list(CONSENSUS_RULES.items()),
        initial="mean",
        label="Consensus rule",
        help_text="How several annotators' preferences become one; its confidence is each row's weight.",
    )
    min_agreement = forms.FloatField(
        min_value=0,
        max_value=1,
        initial=0.0,
        help_text="Share of annotations agreeing with the consensus (agreed items only), 0 to 1.",
    )
    provenance = forms.MultipleChoiceField(
        choices=DatasetRow.Provenance.choices,
        widget=forms.CheckboxSelectMultiple,
        initial=list(DatasetRow.Provenance.values),
    )
    sources = forms.CharField(required=False, help_text="Comma-separated sources to keep; empty keeps every source.")
    train = forms.FloatField(min_value=0, max_value=1, initial=0.8)
    validation = forms.FloatField(min_value=0, max_value=1, initial=0.1)
    test = forms.FloatField(min_value=0, max_value=1, initial=0.1)
    seed = forms.IntegerField(min_value=0, max_value=SEED_MAX, initial=0, help_text="Seed of the split by prompt.")
    parent = forms.ModelChoiceField(queryset=DatasetVersion.objects.none(), required=False, help_text="Lineage.")

    def __init__(self, *args: Any, project: Project, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["projects"].queryset = curated_projects(user)  # type: ignore[attr-defined]
        self.fields["projects"].initial = [project.pk]
        self.fields["parent"].queryset = parent_choices(project, user)  # type: ignore[attr-defined]

    def version_filters(self) -> VersionFilters:
        data = self.cleaned_data
        sources = tuple(s.strip() for s in data["sources"].split(",") if s.strip())
        return VersionFilters(
            states=tuple(data["states"]),
            consensus=data["consensus"],
            min_agreement=data["min_agreement"],
            provenance=tuple(data["provenance"]),
            sources=sources,
            splits={"train": data["train"], "validation": data["validation"], "test": data["test"]},
            seed=data["seed"],
        )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors:
            form_add_errors(self, self.version_filters().errors())
        return cleaned


class VersionCountForm(VersionForm):
    """The build form's filters alone: what the live count reads (name and lineage change no row)."""

    def __init__(self, *args: Any, project: Project, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, project=project, user=user, **kwargs)
        del self.fields["name"], self.fields["parent"]


@login_required
@require_GET
def version_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
    versions = versions_for_project(project, request.user)[:100]
    context = {"project": project, "versions": versions, **_nav(request, project)}
    return render(request, "curation/versions.html", context)


@login_required
@require_http_methods(["GET", "POST"])
def version_new(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
    form = VersionForm(request.POST or None, project=project, user=request.user)
    if request.method == "POST" and form.is_valid():
        if project not in form.cleaned_data["projects"]:
            form.add_error("projects", f"A version built here must include {project.name}.")
        else:
            version = dataset_version_create(
                name=form.cleaned_data["name"],
                projects=form.cleaned_data["projects"],
                filters=form.version_filters(),
                parent=form.cleaned_data["parent"],
                created_by=request.user,  # type: ignore[arg-type]  # login_required: never anonymous here
            )
            dataset_version_freeze_start(version=version)
            return redirect("curation:version_detail", project_id=project.pk, version_id=version.pk)
    context = {"project": project, "form": form, **_count_context(request, project), **_nav(request, project)}
    return render(request, "curation/version_new.html", context, status=422 if form.is_bound else 200)


def _count_context(request: HttpRequest, project: Project) -> dict[str, Any]:
    """The live count's first answer, so the page shows it without JavaScript: of the filters posted, or the
    defaults."""
    form = VersionCountForm(request.POST if request.method == "POST" else None, project=project, user=request.user)
    if not project_is_small(project=project):
        # A big project's count reads every item (seconds at a million): the page comes at once and asks for it.
        return {"count_form": form, "count": None, "count_later": True}
    if not form.is_bound:
        return {"count_form": form, "count": version_row_count(projects=[project], filters=VersionFilters())}
    valid = form.is_valid()
    filters = form.version_filters() if valid else None
    count = version_row_count(projects=list(form.cleaned_data["projects"]), filters=filters) if filters else None
    return {"count_form": form, "count": count}


@login_required
@require_GET
def version_count(request: HttpRequest, project_id: int) -> HttpResponse:
    """The rows the build form's filters would take, as a fragment the form asks for on every change."""
    project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
    form = VersionCountForm(request.GET, project=project, user=request.user)
    count = None
    if form.is_valid():
        count = version_row_count(projects=list(form.cleaned_data["projects"]), filters=form.version_filters())
    return render(
        request, "curation/version_new.html#row-count", {"project": project, "count_form": form, "count": count}
    )


@login_required
@require_POST
def version_freeze(request: HttpRequest, project_id: int, version_id: int) -> HttpResponse:
    """Freeze a draft, or retry one that failed."""
    project, version = version_for_curator(request.user, project_id, version_id)
    try:
        dataset_version_freeze_start(version=version)
    except VersionError as error:
        messages.error(request, str(error))
    return redirect("curation:version_detail", project_id=project.pk, version_id=version.pk)


@login_required
@require_GET
def version_detail(request: HttpRequest, project_id: int, version_id: int) -> HttpResponse:
    project, version = version_for_curator(request.user, project_id, version_id)
    context = _detail_context(request, project, version)
    if not request.htmx:  # type: ignore[attr-defined]
        return render(request, "curation/version_detail.html", context)
    fragment = "curation/version_detail.html#live"
    if context["finished"]:
        # 286 tells htmx to stop polling; the final state is still swapped in.
        return HttpResponseStopPolling(render_to_string(fragment, context, request=request))
    return render(request, fragment, context)


def _detail_context(request: HttpRequest, project: Project, version: DatasetVersion) -> dict[str, Any]:
    jobs = list(export_jobs_for_version(version)[:20])
    busy_jobs = any(job.status in (ExportJob.Status.QUEUED, ExportJob.Status.RUNNING) for job in jobs)
    return {
        "project": project,
        "version": version,
        "rows": version_rows_preview(version) if version.status == DatasetVersion.Status.FROZEN else [],
        "jobs": jobs,
        "formats": ExportJob.Format.choices,
        "histogram": histogram_chart(version.stats.get("margin_histogram", [])),
        "tables": version_tables(version),
        "finished": version.status != DatasetVersion.Status.FREEZING and not busy_jobs,
        "training_runs": list(runs_for_version(version).filter(project=project).order_by("-created_at", "-id")[:20]),
        **_nav(request, project),
    }


# The strength histogram's drawing, in SVG user units: the plot area inside its axes.
PLOT = {"left": 56, "right": 420, "top": 12, "bottom": 150}


def histogram_chart(bins: list[dict[str, Any]]) -> dict[str, Any] | None:
    """A version's margin histogram as bars and axis ticks placed in the plot area (PLOT), or None when empty."""
    if not bins:
        return None
    top = max(b["count"] for b in bins) or 1
    width = (PLOT["right"] - PLOT["left"]) / len(bins)
    height = PLOT["bottom"] - PLOT["top"]
    bars = [
        {
            "x": round(PLOT["left"] + i * width + 1, 1),
            "y": round(PLOT["bottom"] - b["count"] / top * height, 1),
            "width": round(width - 2, 1),
            "height": round(b["count"] / top * height, 1),
            "low": b["low"],
            "high": b["high"],
            "count": b["count"],
        }
        for i, b in enumerate(bins)
    ]
    x_ticks = [
        {"x": round(PLOT["left"] + f * (PLOT["right"] - PLOT["left"]), 1), "label": f"{f:g}"} for f in (0, 0.5, 1)
    ]
    y_ticks = [{"y": PLOT["bottom"], "label": "0"}, {"y": PLOT["top"], "label": str(top)}]
    return {"bars": bars, "x_ticks": x_ticks, "y_ticks": y_ticks, "plot": PLOT, "rows": sum(b["count"] for b in bins)}


@login_required
@require_POST
def export_create(request: HttpRequest, project_id: int, version_id: int) -> HttpResponse:
    project, version = version_for_curator(request.user, project_id, version_id)
    export_format = request.POST.get("format", "")
    if export_format not in ExportJob.Format.values:
        messages.error(request, "Choose an export format.")
    else:
        try:
            user = request.user  # login_required: never anonymous here
            export_job_create(version=version, format=export_format, created_by=user)  # type: ignore[arg-type]
        except VersionError as error:
            messages.error(request, str(error))
    return redirect("curation:version_detail", project_id=project.pk, version_id=version.pk)


@login_required
@require_GET
def export_download(request: HttpRequest, project_id: int, version_id: int, job_id: int) -> FileResponse:
    job = export_for_member(request.user, project_id, version_id, job_id)
    return FileResponse(job.file.open("rb"), as_attachment=True, filename=export_file_name(job))


def _nav(request: HttpRequest, project: Project) -> dict[str, Any]:
    role = role_in_project(request.user, project)
    return {"is_admin": role == Role.ADMIN, "is_curator": role in (Role.CURATOR, Role.ADMIN)}
