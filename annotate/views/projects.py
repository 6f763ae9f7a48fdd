from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate.access import membership_in_project, project_for_member, require_staff, role_in_project
from annotate.forms import MemberForm, ProjectForm
from annotate.models import Membership, Role
from annotate.selectors import progress_for_annotator, projects_with_roles
from annotate.selectors_home import project_filled_by_imports
from annotate.selectors_projects import project_cards
from annotate.services.project_counts import project_counts_current, project_counts_refresh_send
from annotate.services.projects import (
    MembershipError,
    membership_remove,
    membership_set,
    project_create,
    project_update,
)


@require_GET
@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    cards = project_cards(projects_with_roles(request.user))  # type: ignore[arg-type]
    for card in cards:
        if card.stale:
            project_counts_refresh_send(project_id=card.project.pk)
    return render(request, "annotate/project_list.html", {"cards": cards})


@require_GET
@login_required
def project_queue(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id)
    role = role_in_project(request.user, project)
    progress = progress_for_annotator(project=project, annotator=request.user)  # type: ignore[arg-type]
    context = {
        "project": project,
        "role": role,
        "is_admin": role == Role.ADMIN,
        "is_curator": role in (Role.CURATOR, Role.ADMIN),
        "progress": progress,
        "counts": project_counts_current(project=project),
        "filled_by_imports": not progress.remaining and project_filled_by_imports(project=project),
    }
    return render(request, "annotate/queue.html", context)


@require_http_methods(["GET", "POST"])
@login_required
def project_new(request: HttpRequest) -> HttpResponse:
    require_staff(request.user)
    form = ProjectForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        project = project_create(**form.cleaned_data, created_by=request.user)  # type: ignore[arg-type]
        messages.success(request, f"Created {project.name}. Import items and add members next.")
        return redirect("annotate:project_queue", project_id=project.pk)
    return render(request, "annotate/project_form.html", {"form": form, "project": None}, status=_status(form))


@require_http_methods(["GET", "POST"])
@login_required
def project_settings(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    form = ProjectForm(request.POST or None, instance=project)
    if request.method == "POST" and form.is_valid():
        project_update(project=project, **form.cleaned_data)
        messages.success(request, "Settings saved.")
        return redirect("annotate:project_settings", project_id=project.pk)
    return render(request, "annotate/project_form.html", {"form": form, "project": project}, status=_status(form))


@require_http_methods(["GET", "POST"])
@login_required
def project_members(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.ADMIN)
    form = MemberForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = form.cleaned_data["username"]
        try:
            membership_set(project=project, user=user, role=form.cleaned_data["role"])
        except MembershipError as error:
            form.add_error(None, str(error))
        else:
            messages.success(request, f"{user.get_username()} is now {form.cleaned_data['role']} here.")
            return redirect("annotate:project_members", project_id=project.pk)
    members = Membership.objects.filter(project=project).select_related("user").order_by("user__username")
    context = {"project": project, "form": form, "members": members, "roles": Role.choices}
    return render(request, "annotate/members.html", context, status=_status(form))


@require_POST
@login_required
def member_remove(request: HttpRequest, project_id: int, membership_id: int) -> HttpResponse:
    membership = membership_in_project(request.user, project_id, membership_id)
    try:
        membership_remove(membership=membership)
    except MembershipError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, f"Removed {membership.user.get_username()} from the project.")
    return redirect("annotate:project_members", project_id=project_id)


def _status(form: ProjectForm | MemberForm) -> int:
    return 422 if form.is_bound and form.errors else 200
