"""The Retrain form: a frozen dataset version of the project and the training config."""

from typing import Any

from django import forms

from annotate.models import Project
from annotate.selectors import label_schema_current
from concord.forms import form_add_errors
from curation.models import DatasetVersion
from training.selectors import scorable_versions, trainable_versions
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
)


def _default_backbone() -> str:
    """The packaged backbone's directory, or nothing where that package is not installed (type a path)."""
    from training.ml.config import default_backbone

    try:
        return default_backbone()
    except ModuleNotFoundError:
        return ""


class RetrainForm(forms.Form):
    dataset_version = forms.ModelChoiceField(queryset=DatasetVersion.objects.none(), empty_label=None)
    backbone = forms.CharField(
        max_length=500,
        help_text="A local Hugging Face checkpoint directory to start from (weights load offline, safetensors only).",
    )
    objective = forms.ChoiceField(choices=[])
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
    attributes = forms.MultipleChoiceField(
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="For the regression and combined objectives: the rated attributes the model learns to predict, "
        "from the rows' consensus ratings.",
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        from training.ml.config import OBJECTIVES, TrainConfig  # a dataclass module: no torch

        super().__init__(*args, **kwargs)
        for name in CONFIG_FIELDS[2:]:
            self.fields[name].initial = getattr(TrainConfig, name)
        versions = trainable_versions(project)
        self.fields["dataset_version"].queryset = versions  # type: ignore[attr-defined]
        frozen = versions.filter(status=DatasetVersion.Status.FROZEN).first()
        self.fields["dataset_version"].initial = frozen.pk if frozen else None
        self.fields["backbone"].initial = _default_backbone()
        self.fields["objective"].choices = [(name, name) for name in OBJECTIVES]  # type: ignore[attr-defined]
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

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["dataset_version"].queryset = scorable_versions(project)  # type: ignore[attr-defined]
