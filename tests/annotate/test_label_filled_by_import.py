"""The labeling page when the queue is empty because imported labels already fill every item's overlap: it says
so, and where to raise the overlap, rather than a bare "All done" (issue 14)."""

import pytest
from django.urls import reverse

from annotate.models import Annotation, Role
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, UserFactory, member

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
FILLED = "Every item already has the 2 labels this project wants, from its import: nothing is left to label."


def imported_labels(item, count: int) -> None:  # type: ignore[no-untyped-def]
    for n in range(count):
        source = UserFactory(username=f"imported:rater{n}", is_active=False)
        AnnotationFactory(item=item, annotator=source, origin=Annotation.Origin.IMPORTED)


def empty_queue_card(client, project) -> str:  # type: ignore[no-untyped-def]
    """What the page shows once it has asked for the next item (label_next, as htmx does on load)."""
    response = client.post(reverse("annotate:label_next", args=[project.pk]), **HTMX)
    assert response.status_code == 200
    html = response.content.decode()
    assert 'data-testid="queue-empty"' in html
    return html


@pytest.fixture
def project():  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    for item in ItemFactory.create_batch(3, project=project):
        imported_labels(item, 2)
    return project


def test_it_says_the_import_filled_the_overlap(login, project) -> None:  # type: ignore[no-untyped-def]
    html = empty_queue_card(login(member(project)), project)
    assert FILLED in html
    assert "An admin can raise the overlap under Settings." in html
    assert "All done" not in html


def test_it_links_settings_for_an_admin(login, project) -> None:  # type: ignore[no-untyped-def]
    html = empty_queue_card(login(member(project, Role.ADMIN)), project)
    settings_url = reverse("annotate:project_settings", args=[project.pk])
    assert f'under <a href="{settings_url}">Settings</a>.' in html


def test_it_says_all_done_when_members_did_the_labelling(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    item = ItemFactory(project=project)
    AnnotationFactory(item=item, annotator=annotator)
    AnnotationFactory(item=item, annotator=member(project))
    html = empty_queue_card(login(annotator), project)
    assert "All done" in html
    assert FILLED not in html


def test_it_does_not_say_so_while_an_item_still_wants_labels(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    item = ItemFactory(project=project)
    imported_labels(item, 1)
    AnnotationFactory(item=item, annotator=annotator)  # wants one more, from someone else
    html = empty_queue_card(login(annotator), project)
    assert "All done" in html
    assert FILLED not in html


def test_it_counts_an_overlap_of_one_in_the_singular(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    imported_labels(ItemFactory(project=project), 1)
    html = empty_queue_card(login(member(project)), project)
    assert "Every item already has the 1 label this project wants, from its import" in html


def test_it_says_all_done_in_a_project_without_items(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    html = empty_queue_card(login(member(project)), project)
    assert "All done" in html
