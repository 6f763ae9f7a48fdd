"""Label schemas: each change is a new version; annotations keep the version they were made under."""

import copy
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import Max

from annotate.labels import DEFAULT_SCHEMA, LabelError, schema_errors
from annotate.models import LabelSchema, Project


@transaction.atomic
def label_schema_set(*, project: Project, definition: Any, created_by: AbstractBaseUser | None = None) -> LabelSchema:
    """Make `definition` the project's schema. An unchanged definition adds no version."""
    errors = schema_errors(definition)
    if errors:
        raise LabelError(errors=errors)
    # Lock the project row so two admins saving at once get versions n+1 and n+2, not a clash.
    Project.objects.select_for_update().filter(pk=project.pk).first()
    current = LabelSchema.objects.filter(project=project).order_by("-version").first()
    if current is not None and current.definition == definition:
        return current
    latest = LabelSchema.objects.filter(project=project).aggregate(v=Max("version"))["v"] or 0
    return LabelSchema.objects.create(
        project=project,
        version=latest + 1,
        definition=copy.deepcopy(definition),
        created_by_id=created_by.pk if created_by is not None else None,
    )


def default_schema() -> dict[str, Any]:
    return copy.deepcopy(DEFAULT_SCHEMA)


def label_schema_ensure(*, project: Project) -> LabelSchema:
    """The project's current schema, saved: version 1 with the default schema if it had none."""
    current = LabelSchema.objects.filter(project=project).order_by("-version").first()
    return current or label_schema_set(project=project, definition=default_schema())
