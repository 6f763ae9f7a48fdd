"""The review queue's columns on each item (curation.services.review_state): kept in step by every write the rules
read (judged by annotate.rules in Python), equal to what a recomputation from scratch gives (by curation.rule_sql in
SQL), and brought up to date with the queue model on a worker for a big project."""

import uuid

import pytest
from django.core.cache import cache
from django.urls import reverse

from annotate.labels import Labels
from annotate.models import Item, Project, Role
from annotate.selectors import project_counts_cache_key
from annotate.services.gold import gold_answer_set
from annotate.services.labeling import annotation_submit
from annotate.services.projects import project_update
from concord import jobs
from curation.services.adjudication import adjudication_record, item_flag_raise
from curation.services.review_state import project_review_rebuild, review_key
from tests.annotate.factories import AssignmentFactory, ItemFactory, ProjectFactory, member
from tests.jobs import sent_jobs  # noqa: F401
from training.review_tasks import review_queue_sync_task

pytestmark = pytest.mark.django_db

COLUMNS = ("id", "review_severity", "review_reasons", "model_probability_b")


def stored(project: Project) -> dict[int, tuple]:  # type: ignore[type-arg]
    """Each item's review columns; the severity rounded, as Python and SQL may add its points in another order."""
    rows = Item.objects.filter(project=project).values_list(*COLUMNS)
    return {item_id: (severity and round(severity, 9), *rest) for item_id, severity, *rest in rows}


def recomputed(project: Project) -> dict[int, tuple]:  # type: ignore[type-arg]
    """The columns as a recomputation of every item from scratch gives them (the stored ones put back after)."""
    before = stored(project)
    Item.objects.filter(project=project).update(review_severity=None, review_reasons=0)
    project_review_rebuild(project=project, key=review_key(None), probabilities=None, threshold=None)
    after = stored(project)
    for item_id, (severity, reasons, probability) in before.items():
        Item.objects.filter(pk=item_id).update(
            review_severity=severity, review_reasons=reasons, model_probability_b=probability
        )
    return after


def submit(item: Item, annotator, strength: int) -> Item:  # type: ignore[no-untyped-def]
    AssignmentFactory(item=item, annotator=annotator)
    annotation_submit(
        item=item,
        annotator=annotator,
        labels=Labels(strength=strength, justification="because"),
        seconds_spent=3,
        submission_uuid=uuid.uuid4(),
    )
    return item


def test_every_write_the_rules_read_keeps_the_columns_as_a_recomputation_gives_them() -> None:
    project = ProjectFactory(overlap=2, gold_rate=0)
    annotators = [member(project) for _ in range(2)]
    curator = member(project, Role.CURATOR)
    items = [ItemFactory(project=project) for _ in range(6)]
    # Submits through the service: agreeing, split and spread pairs.
    for item, strengths in zip(items, ((2, 3), (-2, 2), (-3, 1)), strict=False):
        for annotator, strength in zip(annotators, strengths, strict=True):
            submit(item, annotator, strength)
    assert stored(project) == recomputed(project)
    queued = Item.objects.filter(project=project, review_severity__isnull=False)
    assert queued.count() == 2  # the split and the spread
    split = queued.order_by("-review_severity").first()
    assert split is not None
    # A flag on an agreed item, a decision on the split one, a gold item, a higher overlap.
    agreed = Item.objects.filter(project=project, annotation_count=2, review_severity__isnull=True).first()
    assert agreed is not None
    item_flag_raise(item=agreed, user=annotators[0], reason="the answer is wrong")
    assert stored(project) == recomputed(project)
    assert Item.objects.get(pk=agreed.pk).review_severity is not None
    adjudication_record(item=split, curator=curator, decision="label", reason="B is right", strength=2)
    assert Item.objects.get(pk=split.pk).review_severity is None
    gold_answer_set(item=Item.objects.filter(project=project, annotation_count=0).first(), preference_sign=1)
    assert stored(project) == recomputed(project)
    project_update(project=project, overlap=3)
    assert Project.objects.get(pk=project.pk).review_key == ""  # recomputed on the queue's next look


@pytest.fixture
def big(monkeypatch):  # type: ignore[no-untyped-def]
    """Projects of more than two items count as big: their queue is brought up to date on a worker."""
    from annotate import selectors

    monkeypatch.setattr(selectors, "SMALL_PROJECT_ITEMS", 2)


def test_a_big_project_s_queue_is_updated_on_a_worker_and_says_so_meanwhile(  # type: ignore[no-untyped-def]
    login,
    big,
    sent_jobs,  # noqa: F811
    django_capture_on_commit_callbacks,
) -> None:
    project = ProjectFactory(overlap=2, gold_rate=0)
    annotators = [member(project) for _ in range(2)]
    split = ItemFactory(project=project)
    for _ in range(2):
        ItemFactory(project=project)
    for annotator, strength in zip(annotators, (-2, 2), strict=True):
        submit(split, annotator, strength)
    cache.delete(f"concord:review-sync:{project.pk}")  # a throttle left by an earlier run's project of this id
    client = login(member(project, Role.CURATOR))
    url = reverse("curation:review_queue", args=[project.pk])
    with django_capture_on_commit_callbacks(execute=True):
        page = client.get(url).content.decode()
    # The columns follow each submit already; the worker's update (the rules' version) is sent and said so.
    assert "queue-updating" in page
    assert f'data-item-id="{split.pk}"' in page
    assert sent_jobs == [(jobs.REVIEW_SYNC, project.pk)]
    review_queue_sync_task(project.pk)
    page = client.get(url).content.decode()
    assert "queue-updating" not in page
    assert f'data-item-id="{split.pk}"' in page
    assert sent_jobs == [(jobs.REVIEW_SYNC, project.pk)]  # nothing sent again once up to date


def test_the_project_home_of_a_big_project_shows_counts_a_worker_made_with_their_age(  # type: ignore[no-untyped-def]
    login,
    big,
    sent_jobs,  # noqa: F811
    django_capture_on_commit_callbacks,
) -> None:
    from annotate.tasks import project_counts_refresh_task

    project = ProjectFactory(overlap=2)
    for _ in range(3):
        ItemFactory(project=project)
    cache.delete(f"concord:project-counts-sent:{project.pk}")  # as above
    cache.delete(project_counts_cache_key(project.pk))
    client = login(member(project, Role.ANNOTATOR))
    url = reverse("annotate:project_queue", args=[project.pk])
    with django_capture_on_commit_callbacks(execute=True):
        assert "being counted" in client.get(url).content.decode()
    assert sent_jobs == [(jobs.PROJECT_COUNTS, project.pk)]
    project_counts_refresh_task(project.pk)
    assert "3 items · 0 with 2 annotations" in client.get(url).content.decode()
