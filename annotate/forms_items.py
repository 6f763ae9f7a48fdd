"""The items list's query string as a form (annotate.views.items)."""

from typing import Any

from django import forms

from .rules import ItemState
from .selectors_items import SORTS, ItemFilters


class ItemFilterForm(forms.Form):
    """The items list's search, filters and sort, from the query string (annotate.selectors_items.ItemFilters).
    A value that does not parse is dropped rather than refused: a hand-edited link still shows a list."""

    q = forms.CharField(required=False, max_length=200, label="Search")
    state = forms.ChoiceField(required=False, choices=[("", "Any state")] + [(s.value, s.value) for s in ItemState])
    gold = forms.ChoiceField(required=False, choices=[("", "Gold or not"), ("1", "Gold only"), ("0", "No gold")])
    flagged = forms.BooleanField(required=False, label="Flagged")
    source = forms.CharField(required=False, max_length=200)
    batch = forms.IntegerField(required=False, min_value=1, label="Import")
    min_annotations = forms.IntegerField(required=False, min_value=0, max_value=10_000, label="Annotations from")
    max_annotations = forms.IntegerField(required=False, min_value=0, max_value=10_000, label="to")
    min_p_b = forms.FloatField(required=False, min_value=0, max_value=1, label="Model P(B) from")
    max_p_b = forms.FloatField(required=False, min_value=0, max_value=1, label="to")
    sort = forms.ChoiceField(required=False, choices=[(key, key) for key in SORTS])
    page = forms.IntegerField(required=False, min_value=1, max_value=100_000)
    start = forms.IntegerField(required=False, min_value=0)

    def __init__(self, data: Any, **kwargs: Any) -> None:
        data = data.copy()
        if "from" in data:
            data["start"] = data["from"]
        super().__init__(data, **kwargs)

    def filters(self) -> ItemFilters:
        self.is_valid()
        cleaned = {name: self.cleaned_data.get(name) for name in self.fields if name not in self.errors}
        cleaned["q"] = (cleaned.get("q") or "").strip()
        return ItemFilters(
            **{name: value for name, value in cleaned.items() if value not in ("", None)}  # type: ignore[arg-type]
        )
