from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser

from .constants import JUSTIFICATION_MAX_CHARS, SKIP_REASON_MAX_CHARS, STRENGTH_LABELS
from .models import Project, Role


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
