"""Bulk actions from the items list (annotate:item_list): the list's form posts here, since the decisions are
curation's (annotate may not import curation's services), and the curator goes back to the same list."""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.http import require_POST

from annotate.access import project_for_member
from annotate.forms_items import ItemFilterForm
from annotate.models import Item, Role
from curation.services.adjudication import MAX_MORE, AdjudicationError
from curation.services.items_bulk import MAX_BULK_ITEMS, BulkAction, items_bulk_decide

DONE = {
    BulkAction.EXCLUDE: "Excluded {count} items from datasets.",
    BulkAction.MORE: "Asked for more annotations of {count} items.",
    BulkAction.GOLD: "Made {count} items gold with their agreed answers.",
}


class BulkForm(forms.Form):
    action = forms.ChoiceField(choices=BulkAction.CHOICES)
    reason = forms.CharField(required=False, max_length=5000)
    more = forms.IntegerField(required=False, min_value=1, max_value=MAX_MORE)


@require_POST
@login_required
def items_bulk(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for_member(request.user, project_id, min_role=Role.CURATOR)
    # The list's query string, parsed and written again: only the list's own parameters go back into the redirect.
    back_query = ItemFilterForm(QueryDict(request.POST.get("list", ""))).filters().query()
    back = reverse("annotate:item_list", args=[project.pk]) + (f"?{back_query}" if back_query else "")
    form = BulkForm(request.POST)
    if not form.is_valid():
        for field, errors in form.errors.items():
            messages.error(request, f"{field}: {' '.join(str(error) for error in errors)}")
        return redirect(back)
    # The ticked ids: each must be an item of this project (anything else is a 404, as a foreign id anywhere);
    # one more than the service takes is enough for it to refuse the request.
    posted = set(request.POST.getlist("items"))
    if not all(value.isdigit() and len(value) < 19 for value in posted):
        raise Http404("No such item")
    ids = sorted(int(value) for value in posted)[: MAX_BULK_ITEMS + 1]
    items = list(Item.objects.filter(project=project, pk__in=ids).select_related("project"))
    if len(items) != len(ids):
        raise Http404("No such item")
    try:
        result = items_bulk_decide(
            items=items,
            curator=request.user,  # type: ignore[arg-type]
            action=form.cleaned_data["action"],
            reason=form.cleaned_data["reason"] or "",
            more=form.cleaned_data["more"] or 0,
        )
    except AdjudicationError as error:
        for path, problems in error.by_path().items():
            messages.error(request, f"{path or 'request'}: {'; '.join(problems)}")
    else:
        messages.success(request, DONE[result.action].format(count=result.count))
    return redirect(back)
