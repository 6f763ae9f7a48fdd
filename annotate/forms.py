import json
import re
from collections.abc import Mapping
from typing import Any, cast

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import NON_FIELD_ERRORS
from django.http import QueryDict

from concord.errors import FieldError

from .constants import JUSTIFICATION_MAX_CHARS, SKIP_REASON_MAX_CHARS
from .labels import Labels, strength_labels
from .models import Project, Role

# Per-response fields of the labeling page: "rating-a-helpfulness", "missing-b" (one value per ticked box),
# "correction-a". Every posted one is read, so a name the schema does not know is reported rather than dropped.
RESPONSE_FIELD = re.compile(r"^(?P<kind>rating|missing|correction)-(?P<side>[^-]+)(?:-(?P<name>.+))?$")
# 200 spans a response, each {"response": "a", "start": 12345, "end": 12399, "category": "..."}, fit well within.
SPANS_JSON_MAX_CHARS = 100_000


class AnnotationForm(forms.Form):
    """One item's labels as the labeling page posts them.

    The form checks only shapes (a number, a JSON list); what the project's label schema allows is checked by
    annotation_submit (annotate.labels.labels_clean). Errors of both name their field the same way, as a path:
    "ratings.a.helpfulness: ...", "spans[0]: ...".
    """

    strength = forms.TypedChoiceField(choices=[], coerce=int, required=False, empty_value=None)
    justification = forms.CharField(required=False, max_length=JUSTIFICATION_MAX_CHARS, strip=True)
    # Written by label.js: [{"response": "a", "start": 0, "end": 12, "category": "irrelevant"}, ...], offsets in
    # code points of the stored response text.
    spans_json = forms.CharField(required=False, max_length=SPANS_JSON_MAX_CHARS, strip=True)
    seconds_spent = forms.FloatField(required=False, min_value=0, max_value=24 * 3600)
    submission_uuid = forms.UUIDField()

    def __init__(self, *args: Any, schema: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Ratings that are not numbers, with their paths (the form's own errors are keyed by field name only).
        self.rating_errors: list[FieldError] = []
        choices = strength_labels(schema)
        strength = cast(forms.TypedChoiceField, self.fields["strength"])
        strength.choices = list(choices.items())
        if schema["preference"]["enabled"]:
            strength.required = True
            strength.error_messages["required"] = f"Choose which response is better (keys 1-{len(choices)})."

    def clean_spans_json(self) -> list[Any]:
        raw = self.cleaned_data["spans_json"]
        if not raw:
            return []
        try:
            spans = json.loads(raw)
        except (ValueError, RecursionError):
            raise forms.ValidationError("the marked spans could not be read (not valid JSON)") from None
        if not isinstance(spans, list):
            raise forms.ValidationError("the marked spans must be a JSON list")
        for index, span in enumerate(spans):
            # labels_clean looks categories up in a set, which needs them hashable.
            if isinstance(span, dict) and not isinstance(span.get("category"), str | None):
                raise forms.ValidationError(f"spans[{index}].category must be text")
        return spans

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        ratings: dict[str, dict[str, Any]] = {}
        missing: list[dict[str, Any]] = []
        corrections: dict[str, str] = {}
        for key in self.data:
            match = RESPONSE_FIELD.match(key)
            if match is None:
                continue
            side, name = match["side"], match["name"]
            if match["kind"] == "rating" and name:
                value = self.data.get(key, "").strip()
                if not value:
                    continue
                try:
                    ratings.setdefault(side, {})[name] = int(value)
                except ValueError:
                    self.rating_errors.append(
                        FieldError(f"ratings.{side}.{name}", f"must be a whole number, got {value!r}")
                    )
                    self.add_error(None, str(self.rating_errors[-1]))
            elif match["kind"] == "missing" and not name:
                kinds = self.data.getlist(key) if isinstance(self.data, QueryDict) else [self.data[key]]
                missing.extend({"response": side, "category": kind} for kind in kinds)
            elif match["kind"] == "correction" and not name:
                # Browsers post a textarea's line breaks as CRLF; keep them as the LF the responses use.
                corrections[side] = self.data.get(key, "").replace("\r\n", "\n")
        cleaned.update(ratings=ratings, missing=missing, corrections=corrections)
        return cleaned

    def labels(self) -> Labels:
        """The labels posted, for annotation_submit to check against the schema; call after is_valid()."""
        data = self.cleaned_data
        return Labels(
            strength=data["strength"],
            justification=data["justification"],
            ratings=data["ratings"],
            spans=data["spans_json"],
            missing=data["missing"],
            corrections=data["corrections"],
        )

    def error_list(self) -> list[FieldError]:
        """Every error with the path of its field, as labels_clean names them."""
        field_errors = [
            FieldError(name, str(error))
            for name, errors in self.errors.items()
            if name != NON_FIELD_ERRORS
            for error in errors
        ]
        return field_errors + self.rating_errors


class SkipForm(forms.Form):
    reason = forms.CharField(
        max_length=SKIP_REASON_MAX_CHARS,
        strip=True,
        error_messages={"required": "Say why you skip this item."},
    )


class ProjectForm(forms.ModelForm):
    class Meta:
        model = Project
        fields = ["name", "guidelines", "overlap", "lease_minutes", "pair_mode", "gold_rate"]
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 8})}


class MemberForm(forms.Form):
    username = forms.CharField(max_length=150)
    role = forms.ChoiceField(choices=Role.choices, initial=Role.ANNOTATOR)

    def clean_username(self) -> AbstractBaseUser:
        username = self.cleaned_data["username"].strip()
        user = get_user_model().objects.filter(username=username, is_active=True).first()
        if user is None:
            raise forms.ValidationError(f"No active user is called {username!r}.")
        return user


class RatingsField(forms.CharField):
    """Ratings typed as JSON, {"a": {"correctness": 4}, "b": {...}}; empty means none. The values themselves
    are checked against the project's schema by the service that takes them."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("required", False)
        kwargs.setdefault("widget", forms.Textarea(attrs={"rows": 3}))
        super().__init__(**kwargs)

    def clean(self, value: Any) -> dict[str, Any]:
        text = (super().clean(value) or "").strip()
        if not text:
            return {}
        try:
            ratings = json.loads(text)
        except json.JSONDecodeError as error:
            raise forms.ValidationError(f"Not valid JSON: {error.msg} (column {error.colno}).") from None
        if not isinstance(ratings, dict):
            raise forms.ValidationError('Give an object like {"a": {...}, "b": {...}}.')
        return ratings
