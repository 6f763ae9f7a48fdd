"""The project list's agreement and active model: a page of its own without JavaScript, and for htmx the same
figures swapped into each project's card (annotate/project_list.html) out of band."""

from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from training.selectors_project_summaries import project_summaries
from training.views_campaigns import HtmxHttpRequest


@require_GET
@login_required
def project_summary_list(request: HtmxHttpRequest) -> HttpResponse:
    summaries = project_summaries(request.user)  # type: ignore[arg-type]  # login_required: never anonymous
    template = "training/project_summaries.html"
    if request.htmx:
        template += "#cards"
    return render(request, template, {"summaries": summaries})
