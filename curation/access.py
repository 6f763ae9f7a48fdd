"""Access helpers for curator pages, beside annotate.access (whose membership lookup needs an admin)."""

from django.http import Http404

from annotate.access import AnyUser, project_for_member
from annotate.models import Membership, Role


def membership_for_curator(user: AnyUser, project_id: int, membership_id: int) -> Membership:
    """A membership of a project the user curates; one of any other project is a 404."""
    project = project_for_member(user, project_id, min_role=Role.CURATOR)
    membership = Membership.objects.filter(pk=membership_id, project=project).select_related("project", "user").first()
    if membership is None:
        raise Http404("No such member")
    return membership
