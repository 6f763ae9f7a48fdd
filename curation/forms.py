"""The curator's decision form on the adjudication page.

Final ratings come as the labeling page's button rows (one radio group per response and attribute, posted as
`rating-<side>-<attribute>`); clean() gathers them into the {"a": {...}, "b": {...}} that adjudication_record
takes, and the service's errors come back beside the row, field or fieldset their path names.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django import forms

from annotate.labels import SIDES
from concord.errors import FieldError
from concord.forms import form_add_errors
from curation.models import Adjudication
from curation.services.adjudication import MAX_MORE

RATINGS = "ratings"


def rating_field_name(side: str, attribute: str) -> str:
    return f"rating-{side}-{attribute}"


def _label(name: str) -> str:
    return name.replace("_", " ").capitalize()


@dataclass(frozen=True)
class RatingGroup:
    """One response's buttons for one attribute: (value, checked, the annotators' consensus) per button."""

    side: str
    field: str
    options: list[tuple[int, bool, bool]]
    errors: list[str]


@dataclass(frozen=True)
class RatingRow:
    name: str
    label: str
    description: str
    groups: list[RatingGroup]

    @property
    def has_error(self) -> bool:
        return any(group.errors for group in self.groups)


@dataclass(frozen=True)
class SummaryEntry:
    """An error for the summary at the form's top: the element it links to, what it is about, the message."""

    anchor: str
    label: str
    message: str


class AdjudicationForm(forms.Form):
    decision = forms.ChoiceField(choices=Adjudication.Decision.choices, widget=forms.RadioSelect)
    # Checked against the project's scale by adjudication_record, which names the range when it is off.
    strength = forms.IntegerField(required=False, label="Final label", widget=forms.Select)
    # Never posted: the button rows are. It holds the errors about the ratings as a whole.
    ratings = forms.Field(required=False, label="Final ratings", widget=forms.HiddenInput)
    more = forms.IntegerField(
        required=False, min_value=1, max_value=MAX_MORE, initial=2, label="How many more annotations"
    )
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), label="Reason", required=False)

    def __init__(
        self, *args: Any, labels: Mapping[int, str], attributes: Sequence[Mapping[str, Any]] = (), **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        choices = [("", "—"), *((value, f"{value:+d} {text}") for value, text in labels.items())]
        self.fields["strength"].widget.choices = choices
        self.attributes = list(attributes)
        for attribute in self.attributes:
            for side in SIDES:
                # The range is the service's to check (it names it); a field only turns the text into a number.
                label = f"{_label(attribute['name'])} of {side.upper()}"
                self.fields[rating_field_name(side, attribute["name"])] = forms.IntegerField(
                    required=False, label=label
                )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        ratings: dict[str, dict[str, int]] = {}
        for attribute in self.attributes:
            for side in SIDES:
                value = data.get(rating_field_name(side, attribute["name"]))
                if value is not None:
                    ratings.setdefault(side, {})[attribute["name"]] = value
        data[RATINGS] = ratings
        return data

    def decision_arguments(self) -> dict[str, Any]:
        """What adjudication_record takes: only the fields that go with the chosen decision."""
        data = self.cleaned_data
        decision = data["decision"]
        return {
            "decision": decision,
            "reason": data["reason"],
            "strength": data["strength"] if decision == Adjudication.Decision.LABEL else None,
            "ratings": data[RATINGS] if decision == Adjudication.Decision.LABEL else None,
            "more": (data["more"] or 0) if decision == Adjudication.Decision.MORE else 0,
        }

    def add_service_errors(self, errors: Iterable[FieldError]) -> None:
        """Each error beside what it is about: ratings.<side>.<attribute> at its button row, other ratings errors
        at the ratings, the rest at the field their path starts with."""
        rest = []
        for error in errors:
            parts = error.path.split(".")
            field = rating_field_name(parts[1], parts[2]) if len(parts) == 3 and parts[0] == RATINGS else ""
            if field in self.fields:
                self.add_error(field, error.message)
            elif parts[0] == RATINGS:
                self.add_error(RATINGS, error.message if error.path == RATINGS else str(error))
            else:
                rest.append(error)
        form_add_errors(self, rest)

    def rating_rows(self, consensus: Mapping[str, Mapping[str, float]] | None = None) -> list[RatingRow]:
        """The button rows, as posted, with the button nearest the annotators' consensus marked."""
        rows = []
        for attribute in self.attributes:
            groups = []
            for side in SIDES:
                field = rating_field_name(side, attribute["name"])
                posted = self.data.get(field) if self.is_bound else None
                typical = (consensus or {}).get(side, {}).get(attribute["name"])
                options = [
                    (value, posted == str(value), typical is not None and round(typical) == value)
                    for value in range(attribute["min"], attribute["max"] + 1)
                ]
                groups.append(RatingGroup(side, field, options, [str(error) for error in self.errors.get(field, [])]))
            name = attribute["name"]
            rows.append(RatingRow(name, _label(name), attribute.get("description", ""), groups))
        return rows

    def summary(self) -> list[SummaryEntry]:
        """Every error, in the order of the form, each linking to what it is about."""
        entries = [SummaryEntry("decide", "", str(message)) for message in self.non_field_errors()]
        rows = [name for name in self.fields if name.startswith("rating-")]
        names = [name for name in self.fields if name not in rows]
        at = names.index(RATINGS) + 1
        for name in [*names[:at], *rows, *names[at:]]:
            field = self.fields[name]
            anchor = {"decision": "decision", RATINGS: "final-ratings"}.get(name, f"id_{name}")
            entries += [SummaryEntry(anchor, str(field.label), str(message)) for message in self.errors.get(name, [])]
        return entries
