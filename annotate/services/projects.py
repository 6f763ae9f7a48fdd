"""Projects and who belongs to them."""

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from annotate.models import Membership, Project, Role


@transaction.atomic
def project_create(
    *, name: str, guidelines: str = "", overlap: int = 3, lease_minutes: int = 30, created_by: AbstractBaseUser
) -> Project:
    """A new project; its creator becomes its admin."""
    project = Project(name=name, guidelines=guidelines, overlap=overlap, lease_minutes=lease_minutes)
    project.full_clean()
    project.save()
    membership_set(project=project, user=created_by, role=Role.ADMIN)
    return project


@transaction.atomic
def membership_set(*, project: Project, user: AbstractBaseUser, role: str) -> Membership:
    """Give a user a role in a project, or change the role they have."""
    membership, _ = Membership.objects.update_or_create(project=project, user_id=user.pk, defaults={"role": Role(role)})
    return membership
