"""Reads for a project's home page beyond the annotator's own progress (annotate.selectors.progress_for_annotator)."""

from django.db.models import F, Max

from .models import Annotation, Item, Membership, Project


def project_filled_by_imports(*, project: Project) -> bool:
    """Whether nothing is left for anyone to label because labels imported with the data already give every item
    the annotations it wants: no item is open to anyone, and none of the project's members has labelled any
    (imported labels belong to inactive "imported:" users, who are not members). Bounded: the first walks the
    queue's index (item_queue_order) below the most labels any item wants, the second each member's annotations
    (annotation_by_annotator); neither reads the project's items one by one. The labeling page's empty queue
    shows the same answer (annotate.views.labeling)."""
    if project.overlap < 1:
        return False
    items = Item.objects.filter(project=project, is_gold=False)
    if not items.exists():
        return False
    most_wanted = project.overlap + (
        Item.objects.filter(project=project, extra_overlap__gt=0).aggregate(most=Max("extra_overlap"))["most"] or 0
    )
    open_items = items.filter(annotation_count__lt=most_wanted).filter(
        annotation_count__lt=F("extra_overlap") + project.overlap
    )
    if open_items.exists():
        return False
    members = Membership.objects.filter(project=project).values("user_id")
    return not Annotation.objects.filter(annotator_id__in=members, item__project=project).exists()
