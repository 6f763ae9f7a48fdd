"""Every view reaches projects and items through these helpers, so permission logic lives here.

A project the user is not a member of, or an item outside the user's project, is a 404: foreign ids
reveal nothing. A member whose role is too low gets a 403.
"""

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import Item, Membership, Project, Role

AnyUser = AbstractBaseUser | AnonymousUser


def role_in_project(user: AnyUser, project: Project) -> str | None:
    """The user's role in the project, or None when not a member. Superusers are admins everywhere."""
    if not user.is_authenticated:
        return None
    if getattr(user, "is_superuser", False):
        return Role.ADMIN
    membership = Membership.objects.filter(project=project, user_id=user.pk).only("role").first()
    return membership.role if membership else None


def project_for_member(user: AnyUser, project_id: int, *, min_role: str = Role.ANNOTATOR) -> Project:
    """The project if the user belongs to it with at least `min_role`: 404 for outsiders, 403 for low roles."""
    project = Project.objects.filter(pk=project_id).first()
    role = role_in_project(user, project) if project else None
    if project is None or role is None:
        raise Http404("No such project")
    if Role.rank(role) < Role.rank(min_role):
        raise PermissionDenied(f"This needs the {Role(min_role).label.lower()} role in {project.name}")
    return project


def _item_in_project(user: AnyUser, project_id: int, item_id: int, *, min_role: str) -> Item:
    project = project_for_member(user, project_id, min_role=min_role)
    item = Item.objects.filter(pk=item_id, project=project).select_related("project").first()
    if item is None:
        raise Http404("No such item")
    return item


def item_for_annotator(user: AnyUser, project_id: int, item_id: int) -> Item:
    """An item of a project the user may annotate in; an item of any other project is a 404."""
    return _item_in_project(user, project_id, item_id, min_role=Role.ANNOTATOR)


def membership_in_project(user: AnyUser, project_id: int, membership_id: int) -> Membership:
    """A membership of a project the user administers; one of any other project is a 404."""
    project = project_for_member(user, project_id, min_role=Role.ADMIN)
    membership = Membership.objects.filter(pk=membership_id, project=project).select_related("project", "user").first()
    if membership is None:
        raise Http404("No such member")
    return membership


def require_staff(user: AnyUser) -> None:
    """Creating projects is for staff users (Django's is_staff), not for every account."""
    if not getattr(user, "is_staff", False):
        raise PermissionDenied("Only staff users can create projects")


def item_for_curator(user: AnyUser, project_id: int, item_id: int) -> Item:
    """An item of a project the user curates; an item of any other project is a 404."""
    return _item_in_project(user, project_id, item_id, min_role=Role.CURATOR)
