from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotate.access import project_for_member, role_in_project
from annotate.models import Role
from annotate.selectors import progress_for_annotator, project_counts, projects_with_roles


@require_GET
@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    projects = projects_with_roles(request.user)  # type: ignore[arg-type]
    return render(request, "annotate/project_list.html", {"projects": projects})


@require_GET
@login_required
def project_queue(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id)
    role = role_in_project(request.user, project)
    context = {
        "project": project,
        "role": role,
        "is_admin": role == Role.ADMIN,
        "progress": progress_for_annotator(project=project, annotator=request.user),  # type: ignore[arg-type]
        "counts": project_counts(project=project),
    }
    return render(request, "annotate/queue.html", context)
