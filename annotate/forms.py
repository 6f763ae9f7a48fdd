from django import forms

from .constants import JUSTIFICATION_MAX_CHARS, SKIP_REASON_MAX_CHARS, STRENGTH_LABELS


class AnnotationForm(forms.Form):
    strength = forms.TypedChoiceField(
        choices=[(value, label) for value, label in STRENGTH_LABELS.items()],
        coerce=int,
        error_messages={"required": "Choose which response is better (keys 1-7)."},
    )
    justification = forms.CharField(required=False, max_length=JUSTIFICATION_MAX_CHARS, strip=True)
    seconds_spent = forms.FloatField(required=False, min_value=0, max_value=24 * 3600)
    submission_uuid = forms.UUIDField()


class SkipForm(forms.Form):
    reason = forms.CharField(
        max_length=SKIP_REASON_MAX_CHARS,
        strip=True,
        error_messages={"required": "Say why you skip this item."},
    )
