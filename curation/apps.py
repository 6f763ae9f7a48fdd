from django.apps import AppConfig


class CurationConfig(AppConfig):
    name = "curation"
    verbose_name = "Curation"

    def ready(self) -> None:
        from annotate.signals import items_changed
        from curation.services.review_state import on_items_changed

        # The review queue's columns follow the items' labels (curation.services.review_state).
        items_changed.connect(on_items_changed, dispatch_uid="curation.review_state")
