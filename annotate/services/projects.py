"""Projects and who belongs to them."""

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction

from annotate.models import Membership, Project, Role
from annotate.services.schemas import default_schema, label_schema_set


class MembershipError(Exception):
    """A membership change that would leave the project in a bad state; the message says why."""


@transaction.atomic
def project_create(
    *,
    name: str,
    guidelines: str = "",
    overlap: int = 3,
    lease_minutes: int = 30,
    created_by: AbstractBaseUser,
    schema: dict[str, Any] | None = None,
    **settings: Any,
) -> Project:
    """A new project with the default label schema (or `schema`); its creator becomes its admin.
    `settings` may set the other PROJECT_SETTINGS (pair_mode, gold_rate)."""
    project = Project(name=name, guidelines=guidelines, overlap=overlap, lease_minutes=lease_minutes, **settings)
    project.full_clean()
    project.save()
    membership_set(project=project, user=created_by, role=Role.ADMIN)
    label_schema_set(project=project, definition=schema or default_schema(), created_by=created_by)
    return project


PROJECT_SETTINGS = ("name", "guidelines", "overlap", "lease_minutes", "pair_mode", "gold_rate")


@transaction.atomic
def project_update(*, project: Project, **settings: Any) -> Project:
    """Change a project's settings (any of PROJECT_SETTINGS). A higher overlap sends finished items back to
    annotators' queues."""
    unknown = set(settings) - set(PROJECT_SETTINGS)
    if unknown:
        raise TypeError(f"not project settings: {', '.join(sorted(unknown))}")
    fields = list(settings)
    if "overlap" in settings and settings["overlap"] != project.overlap:
        # Which items are complete changed, so the review queue's columns are recomputed on its next look.
        settings["review_key"] = ""
        fields.append("review_key")
    for name, value in settings.items():
        setattr(project, name, value)
    project.full_clean()
    project.save(update_fields=fields)
    return project


@transaction.atomic
def membership_set(*, project: Project, user: AbstractBaseUser, role: str) -> Membership:
    """Give a user a role in a project, or change the role they have."""
    existing = Membership.objects.select_for_update().filter(project=project, user_id=user.pk).first()
    if existing is not None and existing.role == Role.ADMIN and role != Role.ADMIN:
        _ensure_another_admin(project=project, leaving=existing)
    membership, _ = Membership.objects.update_or_create(project=project, user_id=user.pk, defaults={"role": Role(role)})
    return membership


@transaction.atomic
def membership_remove(*, membership: Membership) -> None:
    """Take a user out of a project. Their annotations stay; they get no more work here."""
    if membership.role == Role.ADMIN:
        _ensure_another_admin(project=membership.project, leaving=membership)
    membership.delete()


def _ensure_another_admin(*, project: Project, leaving: Membership) -> None:
    # Locking every admin row of the project makes two admins demoting each other at once safe.
    admins = Membership.objects.select_for_update().filter(project=project, role=Role.ADMIN).exclude(pk=leaving.pk)
    if not list(admins.values_list("pk", flat=True)):
        raise MembershipError("A project needs at least one admin: make someone else admin first.")
