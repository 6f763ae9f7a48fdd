"""The Retrain form (a frozen dataset version of the project and the training config) and the campaign forms: start
a campaign, filter a round's decisions, override one."""

import dataclasses
from functools import partial
from pathlib import Path
from typing import Any

from django import forms

from annotate.models import Project
from annotate.rules import Pool
from annotate.selectors import label_schema_current
from concord.forms import form_add_errors
from curation.models import DatasetVersion
from training.ml.selection import STRATEGY_LABELS
from training.ml.synergy import CONTRADICTION_ACTIONS, ENSEMBLE_KINDS, UNCERTAIN_ACTIONS, CampaignSettings, Decision
from training.selectors import scorable_versions, trainable_versions
from training.selectors_backbones import BACKBONE_REFUSED, backbone_choices, backbone_default
from training.selectors_campaigns import DecisionFilters
from training.services.campaigns import OVERRIDES
from training.services.runs import TrainingError, training_config_clean

SEED_MAX = 2**31 - 1
CONFIG_FIELDS = (
    "backbone",
    "objective",
    "epochs",
    "batch_size",
    "learning_rate",
    "max_length",
    "ensemble_size",
    "seed",
    "dropout",
)


def _backbone_options(user: Any) -> list[tuple[str, str]]:
    """The allowed backbones, each labelled in words: the packaged default, a model directory under the server's
    model roots (by its folder's name, then where it is), a model trained in a project the user administers."""
    options = []
    for backbone in backbone_choices(user):
        label = backbone.label
        if backbone.label == backbone.path and backbone.path != backbone_default():  # under a model root
            path = Path(backbone.path)
            label = f"{path.name}, on the server ({path.parent})"
        options.append((backbone.path, label))
    return options


def _objective_options() -> list[tuple[str, str]]:
    from training.ml.config import OBJECTIVE_LABELS  # a dataclass module: no torch

    return [(name, f"{label}: {line}") for name, (label, line) in OBJECTIVE_LABELS.items()]


class RetrainForm(forms.Form):
    dataset_version = forms.ModelChoiceField(queryset=DatasetVersion.objects.none(), empty_label=None)
    backbone = forms.ChoiceField(
        choices=[],
        error_messages={"invalid_choice": BACKBONE_REFUSED},
        help_text="The model to start from: the packaged default, a model under the server's model roots, or one "
        "trained in a project you administer (weights load offline, safetensors only).",
    )
    objective = forms.ChoiceField(choices=_objective_options, widget=forms.RadioSelect)
    # Initial values come from TrainConfig's defaults (see __init__), so the form and the config agree.
    epochs = forms.IntegerField(min_value=1, max_value=100)
    batch_size = forms.IntegerField(min_value=1, max_value=1024, help_text="Pairs per step.")
    learning_rate = forms.FloatField(help_text="Peak AdamW rate, between 0 and 1, e.g. 2e-5.")
    max_length = forms.IntegerField(
        min_value=8, max_value=32768, help_text="Tokens per prompt + response; longer ones lose the prompt's start."
    )
    ensemble_size = forms.IntegerField(
        min_value=1, max_value=16, help_text="Separately seeded models; their spread measures uncertainty."
    )
    seed = forms.IntegerField(min_value=0, max_value=SEED_MAX)
    dropout = forms.BooleanField(
        required=False,
        label="Train with dropout",
        help_text="The checkpoint's own dropout rates. Off by default, as in TRL: both responses of a pair are scored "
        "without noise, and a CPU step takes about half the time.",
    )
    attributes = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="For the regression and combined objectives: the rated attributes the model learns to predict, "
        "from the rows' consensus ratings.",
    )

    def __init__(self, *args: Any, project: Project, user: Any, **kwargs: Any) -> None:
        from training.ml.config import OBJECTIVES, TrainConfig  # a dataclass module: no torch

        super().__init__(*args, **kwargs)
        for name in CONFIG_FIELDS[2:]:
            self.fields[name].initial = getattr(TrainConfig, name)
        versions = trainable_versions(project, user)
        self.fields["dataset_version"].queryset = versions  # type: ignore[attr-defined]
        frozen = versions.filter(status=DatasetVersion.Status.FROZEN).first()
        self.fields["dataset_version"].initial = frozen.pk if frozen else None
        # Callables, so the model roots are walked only when the form is shown or checked: the runs page's htmx
        # poll builds it every two seconds to show only the runs.
        self.fields["backbone"].choices = partial(_backbone_options, user)  # type: ignore[attr-defined]
        self.fields["backbone"].initial = backbone_default
        self.fields["objective"].initial = OBJECTIVES[0]
        names = [attribute["name"] for attribute in label_schema_current(project=project).definition["attributes"]]
        self.fields["attributes"].choices = [(name, name) for name in names]  # type: ignore[attr-defined]
        self.fields["attributes"].initial = names

    def clean_dataset_version(self) -> DatasetVersion:
        version: DatasetVersion = self.cleaned_data["dataset_version"]
        if version.status != DatasetVersion.Status.FROZEN:
            raise forms.ValidationError(
                f"{version.name} is {version.get_status_display().lower()}: only a frozen version can be trained on. "
                "Freeze it on its page first."
            )
        return version

    def clean_learning_rate(self) -> float:
        rate: float = self.cleaned_data["learning_rate"]
        if not 0 < rate <= 1:
            raise forms.ValidationError("The learning rate must be above 0 and at most 1 (e.g. 2e-5).")
        return rate

    def config(self) -> dict[str, Any]:
        from training.ml.config import ATTRIBUTE_OBJECTIVES

        config = {name: self.cleaned_data[name] for name in CONFIG_FIELDS}
        # Only attribute objectives have attribute outputs; a preference model ignores the choice.
        config["attributes"] = self.cleaned_data["attributes"] if config["objective"] in ATTRIBUTE_OBJECTIVES else []
        return config

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if not self.errors:
            try:
                self.cleaned_config = training_config_clean(self.config())
            except TrainingError as error:
                form_add_errors(self, error.errors)
        return cleaned


class ScoringForm(forms.Form):
    """Which items a scoring job scores: all of the project's, or those in one of its frozen versions."""

    dataset_version = forms.ModelChoiceField(
        queryset=DatasetVersion.objects.none(), required=False, empty_label="All items of the project"
    )

    def __init__(self, *args: Any, project: Project, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dataset_version"].queryset = scorable_versions(project, user)  # type: ignore[attr-defined]


# Human-AI synergy campaigns.

SETTINGS_CHOICES = {
    "ensemble_kind": ENSEMBLE_KINDS,
    "contradiction_action": CONTRADICTION_ACTIONS,
    "uncertain_action": UNCERTAIN_ACTIONS,
}


def _settings_field(spec: "dataclasses.Field[Any]") -> forms.Field:
    """A form field for one CampaignSettings field, with its help text and default. Only the type is checked
    here: the ranges are CampaignSettings.problems()' to say (campaign_start), so they live in one place."""
    options: dict[str, Any] = {
        "label": spec.name.replace("_", " ").capitalize().replace("Ai ", "AI "),
        "help_text": spec.metadata.get("help", ""),
        "initial": spec.default,
    }
    if spec.name in SETTINGS_CHOICES:
        return forms.ChoiceField(choices=[(value, value) for value in SETTINGS_CHOICES[spec.name]], **options)
    kind = spec.type if isinstance(spec.type, type) else {"int": int, "float": float}.get(str(spec.type), str)
    if kind is int:
        return forms.IntegerField(**options)
    if kind is float:
        return forms.FloatField(**options)
    return forms.CharField(required=False, max_length=500, **options)


class CampaignForm(forms.Form):
    """A campaign's name and settings, one field per CampaignSettings field in its order."""

    name = forms.CharField(max_length=200, required=False, help_text="Empty: named after the date and time.")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for spec in dataclasses.fields(CampaignSettings):
            self.fields[spec.name] = _settings_field(spec)

    def settings(self) -> dict[str, Any]:
        """The settings as campaign_start takes them (after is_valid)."""
        return {spec.name: self.cleaned_data[spec.name] for spec in dataclasses.fields(CampaignSettings)}


EFFECTIVE_DECISIONS = (*(decision.value for decision in Decision), "route")
SOURCES = (Pool.SILVER, Pool.UNLABELLED)
STRENGTH_INPUT = forms.TextInput(attrs={"inputmode": "decimal", "size": 8})


class DecisionFilterForm(forms.Form):
    """The decision list's filters, read from the query string; every one optional."""

    decision = forms.ChoiceField(
        required=False,
        choices=[("", "any"), *((value, value) for value in EFFECTIVE_DECISIONS)],
        help_text="The effective decision: a curator's override, else the round's.",
    )
    source = forms.ChoiceField(required=False, choices=[("", "any"), *((str(pool), str(pool)) for pool in SOURCES)])
    routed = forms.ChoiceField(required=False, choices=[("", "any"), ("yes", "routed"), ("no", "not routed")])
    # Text inputs: a value that is no number stays in view beside its error (a number input would blank it).
    min_strength = forms.FloatField(required=False, label="Strength from", widget=STRENGTH_INPUT)
    max_strength = forms.FloatField(required=False, label="Strength up to", widget=STRENGTH_INPUT)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        low, high = cleaned.get("min_strength"), cleaned.get("max_strength")
        if low is not None and high is not None and low > high:
            self.add_error("max_strength", f"must not be below the lower bound ({low:g})")
        return cleaned

    def filters(self) -> DecisionFilters:
        data = self.cleaned_data
        routed = {"yes": True, "no": False}.get(data["routed"])
        return DecisionFilters(
            decision=data["decision"],
            pool=data["source"],
            routed=routed,
            min_strength=data["min_strength"],
            max_strength=data["max_strength"],
        )


class OverrideForm(forms.Form):
    """A curator's decision on one pair in place of the round's: the choices its pool allows, and why."""

    decision = forms.ChoiceField(choices=[])
    reason = forms.CharField(
        required=False,  # pair_decision_override says why a reason is needed, beside the field
        max_length=2000,
        widget=forms.Textarea(attrs={"rows": 2}),
    )

    def __init__(self, *args: Any, pool: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [(str(value), str(value)) for value in OVERRIDES.get(Pool(pool), ())]
        self.fields["decision"].choices = choices  # type: ignore[attr-defined]


# Selective annotation.


class SelectionPolicyForm(forms.Form):
    """A project's selection policy. Only the types are checked here; the ranges are the service's to say
    (training.services.selection.policy_errors), so they live in one place."""

    strategy = forms.ChoiceField(
        required=False,
        help_text="What the queue hands out first. Every strategy but random reads the active reward model.",
    )
    batch_size = forms.IntegerField(initial=500, help_text="Items ranked by each selection.")
    random_share = forms.FloatField(
        initial=0.1, help_text="Share of each batch drawn at random, so the labels stay representative (0 to 1)."
    )
    pool_limit = forms.IntegerField(
        initial=100_000, help_text="Unlabelled items scored per selection (a seeded sample when there are more)."
    )
    every_labels = forms.IntegerField(initial=0, help_text="Select again after this many new human labels; 0: never.")
    after_promotion = forms.BooleanField(
        required=False, initial=True, help_text="Select again when a model is promoted."
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "Queue order (least annotated first)"), *STRATEGY_LABELS.items()]
        self.fields["strategy"].choices = choices  # type: ignore[attr-defined]
