"""The label summary columns of an item (kept in SQL) agree with annotate.rules.label_summary (in Python), and every
path that adds annotations keeps them: the labeling page, imports."""

import random
import uuid

import pytest
from django.urls import reverse

from annotate.labels import DEFAULT_SCHEMA, Labels
from annotate.models import Annotation, Item
from annotate.rules import LabelSummary, label_summary
from annotate.selectors import item_label_summary
from annotate.services.label_summary import item_label_summaries_refresh, project_label_summaries_refresh
from annotate.services.labeling import annotation_submit, assignment_next
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, UserFactory, member

pytestmark = pytest.mark.django_db

# Ratings as stored, odd ones included: the summary counts whole numbers only, whatever the JSON holds.
ODD_RATINGS = [
    {},
    {"a": {"helpfulness": 4}},
    {"a": {"helpfulness": 0, "verbosity": 2}, "b": {"helpfulness": 3}},
    {"a": {"helpfulness": 2.5}},
    {"a": {"helpfulness": 2.0}, "b": {"helpfulness": 1e3}},
    {"a": {"helpfulness": True}},
    {"a": {"helpfulness": "4"}},
    {"a": [1, 2]},
    {"b": None},
    {"b": {"helpfulness": 1, "correctness": 4}},
]


def stored_summary(item: Item) -> LabelSummary:
    item.refresh_from_db()
    return item_label_summary(item, overlap=item.project.overlap)


def python_summary(item: Item) -> LabelSummary:
    annotations = list(Annotation.objects.filter(item=item).values_list("origin", "strength", "ratings"))
    return label_summary(annotations, wanted=item.project.overlap + item.extra_overlap)


def test_the_sql_summary_is_the_python_summary_on_random_items() -> None:
    rng = random.Random(9)
    project = ProjectFactory(overlap=3)
    annotators = [UserFactory() for _ in range(5)]
    items = [ItemFactory(project=project) for _ in range(60)]
    for item in items:
        for annotator in rng.sample(annotators, rng.randint(0, 5)):
            Annotation.objects.create(
                item=item,
                annotator=annotator,
                origin=rng.choice(["human", "imported"]),
                strength=rng.choice([None, -3, -2, -1, 0, 1, 2, 3]),
                ratings=rng.choice(ODD_RATINGS),
            )
        Item.objects.filter(pk=item.pk).update(annotation_count=Annotation.objects.filter(item=item).count())
    # Written behind the services' back, so the columns are stale until refreshed.
    item_label_summaries_refresh(item_ids=[item.pk for item in items])
    for item in items:
        assert stored_summary(item) == python_summary(item), item.pk
    # A whole project at once, in chunks, gives the same.
    Item.objects.filter(project=project).update(strength_count=0, rating_spread=0, prefer_a_count=0)
    assert project_label_summaries_refresh(project_id=project.pk, chunk_size=7) == len(items)
    assert all(stored_summary(item) == python_summary(item) for item in items)


def test_a_submit_from_the_labeling_page_keeps_the_summary(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2, schema=DEFAULT_SCHEMA)
    first, second = member(project), member(project)
    item = ItemFactory(project=project)
    ratings = {
        side: dict.fromkeys(("helpfulness", "correctness", "coherence", "complexity", "verbosity"), 2) for side in "ab"
    }
    assert assignment_next(project=project, annotator=first) == item
    annotation_submit(
        item=item,
        annotator=first,
        labels=Labels(strength=-3, ratings=ratings),
        seconds_spent=3,
        submission_uuid=uuid.uuid4(),
    )
    client = login(second)
    client.post(reverse("annotate:label_next", args=[project.pk]))
    form = {f"rating-{side}-{name}": "2" for side in "ab" for name in ratings["a"]}
    form |= {"strength": "1", "submission_uuid": str(uuid.uuid4()), "rating-a-verbosity": "4"}
    assert client.post(reverse("annotate:submit", args=[project.pk, item.pk]), form).status_code == 302
    summary = stored_summary(item)
    assert summary == python_summary(item)
    assert (summary.prefer_a, summary.prefer_b, summary.strength_min, summary.strength_max) == (1, 1, -3, 1)
    assert (summary.human, summary.rating_spread, summary.annotations) == (2, 2, 2)


def test_an_import_keeps_the_summary(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from django.core.management import call_command

    project = ProjectFactory(overlap=3)
    records = [
        {"idx": 1, "instruction": "Add 2 and 2.", "response1": "4", "response2": "5",
         "annotator1": 1, "annotator2": 1, "annotator3": 2},
        {"idx": 2, "instruction": "Name a colour.", "response1": "Blue", "response2": "Cat",
         "annotator1": 1, "annotator2": 0, "annotator3": 1},
    ]  # fmt: skip
    path = tmp_path / "pandalm.json"
    path.write_text(json.dumps(records))
    call_command("import_items", "--project", project.name, "--format", "pandalm", str(path), verbosity=0)
    split, calm = Item.objects.filter(project=project).order_by("external_id")
    for item in (split, calm):
        assert stored_summary(item) == python_summary(item)
        assert stored_summary(item).imported_only
    assert (stored_summary(split).prefer_a, stored_summary(split).prefer_b) == (2, 1)
    assert (stored_summary(calm).prefer_a, stored_summary(calm).prefer_b, stored_summary(calm).strengths) == (2, 0, 3)


def test_refreshing_a_project_leaves_other_projects_alone() -> None:
    mine, other = ProjectFactory(), ProjectFactory()
    foreign = ItemFactory(project=other)
    Annotation.objects.create(item=foreign, annotator=UserFactory(), strength=2)
    project_label_summaries_refresh(project_id=mine.pk)
    assert stored_summary(foreign).strengths == 0  # written behind the services' back, and not this project's
    project_label_summaries_refresh(project_id=other.pk)
    assert stored_summary(foreign).strengths == 1


def test_a_fix_in_the_admin_site_counts_the_item_again(client) -> None:  # type: ignore[no-untyped-def]
    superuser = UserFactory(is_staff=True, is_superuser=True)
    client.force_login(superuser)
    project = ProjectFactory(overlap=2)
    item = ItemFactory(project=project)
    first = AnnotationFactory(item=item, strength=-2)
    AnnotationFactory(item=item, strength=-1)
    assert stored_summary(item).prefer_a == 2
    form = {
        "item": item.pk,
        "annotator": first.annotator_id,
        "origin": "human",
        "strength": "3",
        "justification": "",
        "ratings": "{}",
        "spans": "[]",
        "missing": "[]",
        "corrections": "{}",
        "seconds_spent": "0",
    }
    response = client.post(reverse("admin:annotate_annotation_change", args=[first.pk]), form)
    assert response.status_code == 302, response.content.decode()[-2000:]
    summary = stored_summary(item)
    assert (summary.prefer_a, summary.prefer_b, summary.strength_max) == (1, 1, 3)
    response = client.post(reverse("admin:annotate_annotation_delete", args=[first.pk]), {"post": "yes"})
    assert response.status_code == 302
    summary = stored_summary(item)
    assert (summary.annotations, summary.strengths, summary.prefer_b) == (1, 1, 0)
    assert summary == python_summary(item)


def test_the_repair_command_counts_every_item_again() -> None:
    from io import StringIO

    from django.core.management import call_command

    project = ProjectFactory(overlap=2, name="Repairs")
    item = ItemFactory(project=project)
    Annotation.objects.create(item=item, annotator=UserFactory(), strength=2)  # around the services
    out = StringIO()
    call_command("repair_label_summaries", "--project", "Repairs", stdout=out)
    assert "Repairs: 1 items counted again." in out.getvalue()
    assert stored_summary(item) == python_summary(item)
    assert stored_summary(item).annotations == 1
