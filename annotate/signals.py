"""Signals annotate sends for the apps built on it, which it must not import (annotate < curation < training)."""

from django.dispatch import Signal

# Sent, inside the writing transaction and holding the items' row locks, after something an item's review rules
# read has changed: its annotations (and so its label summary columns), or whether it is gold. Keyword arguments:
# project_id and item_ids (a sorted list). curation.services.review_state keeps the review queue's columns with it.
items_changed = Signal()
