"""Training's part of the item page (annotate.views.items reads these): the active model's scores of an item and
the latest synergy decision on it."""

from annotate.models import Item
from training.models import ItemScore, PairDecision
from training.selectors import active_model_scores


def item_score(item: Item) -> ItemScore | None:
    """The active reward model's scores of the item, with the model."""
    return active_model_scores(item.project).filter(item=item).select_related("reward_model").first()


def item_pair_decision(item: Item) -> PairDecision | None:
    """The latest curation round's decision on the item, with its round and campaign; None when no round has
    decided it."""
    return (
        PairDecision.objects.filter(item=item, round__campaign__project_id=item.project_id)
        .select_related("round__campaign")
        .order_by("-round__campaign__created_at", "-round__number")
        .first()
    )
