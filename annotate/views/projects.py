from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotate.access import project_for_member, role_in_project
from annotate.models import Membership, Role
from annotate.selectors import progress_for_annotator, project_counts, projects_for_user


@require_GET
@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    roles = dict(Membership.objects.filter(user_id=request.user.pk).values_list("project_id", "role"))
    projects = [
        (project, Role.ADMIN if request.user.is_superuser else roles.get(project.pk))
        for project in projects_for_user(request.user)  # type: ignore[arg-type]
    ]
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
