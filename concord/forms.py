"""Showing a service's errors (concord.errors) on a Django form, each beside the field its path names."""

from collections.abc import Iterable

from django import forms

from concord.errors import FieldError, path_head


def form_add_errors(form: forms.Form, errors: Iterable[FieldError], *, fallback: str | None = None) -> None:
    """Each error goes to the form field its path starts with; a path deeper than the field keeps its path in the
    message ("ratings.a.helpfulness: ..."). Errors about no field of the form go to `fallback` (None: the form as
    a whole)."""
    for error in errors:
        head = path_head(error.path)
        if head in form.fields:
            form.add_error(head, error.message if error.path == head else str(error))
        else:
            form.add_error(fallback, str(error))
