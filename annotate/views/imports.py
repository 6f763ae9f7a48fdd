"""Project admins upload files of items and watch the import run."""

from typing import Any

from django import forms
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.template.defaultfilters import filesizeformat
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods
from django_htmx.http import HttpResponseStopPolling

from annotate.access import Role, project_for_member
from annotate.formats import FORMATS, Detection, ImportFormatError
from annotate.models import ImportBatch, Project
from annotate.selectors import import_batches_for_project, import_progress
from annotate.selectors_home import project_filled_by_imports
from annotate.services.imports import AUTO_FORMAT, import_batch_create, import_format_detect

SEED_MAX = 2**63 - 1


class ImportForm(forms.Form):
    file = forms.FileField(help_text="JSON lines or a JSON array (FineGrainedRLHF, PandaLM), plain or gzip-compressed.")
    format = forms.ChoiceField(
        choices=[(AUTO_FORMAT, "Detect from the file's first records"), *FORMATS.items()],
        initial=AUTO_FORMAT,
        help_text="Detection reads the first few records only, and says which format it found.",
    )
    seed = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=SEED_MAX,
        help_text="Seed of the chosen/rejected to A/B shuffle; leave empty for a random one.",
    )

    detection: Detection | None = None

    def clean_file(self) -> UploadedFile:
        upload: UploadedFile = self.cleaned_data["file"]
        limit = settings.CONCORD_MAX_UPLOAD_BYTES
        if upload.size is not None and upload.size > limit:
            raise forms.ValidationError(
                f"The file is {filesizeformat(upload.size)}; files up to {filesizeformat(limit)} can be imported."
            )
        return upload

    def clean(self) -> dict[str, Any]:
        """With "auto", the format detected from the upload's first records (or the file's error naming the likely
        ones); `detection` is kept for the message that says which was found."""
        cleaned = super().clean() or {}
        upload = cleaned.get("file")
        if cleaned.get("format") != AUTO_FORMAT or upload is None:
            return cleaned
        try:
            self.detection = import_format_detect(raw=upload.file)
        except ImportFormatError as error:
            self.add_error("file", error.for_file(upload.name or "The file"))
        else:
            cleaned["format"] = self.detection.format
        return cleaned


@login_required
@require_http_methods(["GET", "POST"])
def import_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    form = ImportForm(request.POST, request.FILES) if request.method == "POST" else ImportForm()
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        batch = import_batch_create(
            project=project,
            created_by=request.user,  # type: ignore[arg-type]  # login_required: never anonymous here
            file_name=upload.name or "upload.jsonl",
            format=form.cleaned_data["format"],
            seed=form.cleaned_data["seed"],
            upload=upload,
        )
        if form.detection is not None:
            messages.info(request, form.detection.describe())
        return redirect("annotate:import_detail", project_id=project.pk, batch_id=batch.pk)
    return render(
        request,
        "annotate/imports.html",
        {"project": project, "form": form, "batches": import_batches_for_project(project)[:50]},
        status=422 if form.is_bound else 200,
    )


@login_required
@require_GET
def import_detail(request: HttpRequest, project_id: int, batch_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    batch = get_object_or_404(import_batches_for_project(project), pk=batch_id)
    context = _detail_context(project, batch)
    if not request.htmx:  # type: ignore[attr-defined]
        return render(request, "annotate/import_detail.html", context)
    partial = "annotate/import_detail.html#progress"
    if context["finished"]:
        # 286 tells htmx to stop polling; the final state is still swapped in.
        return HttpResponseStopPolling(render_to_string(partial, context, request=request))
    return render(request, partial, context)


def _detail_context(project: Project, batch: ImportBatch) -> dict[str, object]:
    done = batch.status == ImportBatch.Status.DONE
    return {
        "project": project,
        "batch": batch,
        "progress": import_progress(batch),
        "finished": batch.status in (ImportBatch.Status.DONE, ImportBatch.Status.FAILED),
        "filled_by_imports": done and project_filled_by_imports(project=project),
    }
