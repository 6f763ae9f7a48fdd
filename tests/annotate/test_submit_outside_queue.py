"""Submits and skips take only work the queue handed out (issue 12, item 6): the annotator's own lease on the item,
live, or run out while nobody took their place; never from a paused annotator. A refusal says why, with 409 (not
this annotator's item) or 403 (paused), and writes nothing; a repeat of a saved submit still says what happened."""

import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotate.labels import Labels
from annotate.models import Annotation, Assignment, Item, Membership
from annotate.services.labeling import AnnotatorPaused, OutsideQueue, annotation_submit, assignment_skip
from tests.annotate.factories import AssignmentFactory, ItemFactory, ProjectFactory, member
from tests.annotate.test_labeling import HTMX, item_number, shown_item, submission_uuid, submit, take_next

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    ItemFactory.create_batch(3, project=project)
    return project


def pause(annotator, project) -> None:  # type: ignore[no-untyped-def]
    Membership.objects.filter(project=project, user=annotator).update(is_paused=True)


def skip(client, project, item_id: int, **headers: str):  # type: ignore[no-untyped-def]
    return client.post(
        reverse("annotate:skip", args=[project.pk, item_id]), {"reason": "Outside my expertise"}, **headers
    )


def leases(annotator) -> list[tuple[int, str]]:  # type: ignore[no-untyped-def]
    return list(Assignment.objects.filter(annotator=annotator).order_by("item").values_list("item", "status"))


def test_it_refuses_a_submit_to_an_item_never_handed_to_the_annotator(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    leased = shown_item(take_next(client, project))
    other = Item.objects.filter(project=project).exclude(pk=leased).first()
    assert other is not None
    response = submit(client, project, other.pk)
    assert response.status_code == 409
    body = response.content.decode()
    assert f"Not saved: Item {other.number} was not handed to you" in body
    assert 'data-testid="queue-next"' in body, "the card offers the next item instead"
    assert shown_item(response) is None
    assert not Annotation.objects.exists()
    assert Item.objects.get(pk=other.pk).annotation_count == 0
    assert leases(annotator) == [(leased, Assignment.Status.LEASED)], "no assignment was made up for it"


def test_it_refuses_a_submit_to_an_item_leased_to_someone_else_so_overlap_holds(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    only = ItemFactory(project=project)
    holder, outsider = member(project), member(project)
    assert shown_item(take_next(login(holder), project)) == only.pk
    outsider_client = login(outsider)
    assert submit(outsider_client, project, only.pk).status_code == 409
    assert submit(login(holder), project, only.pk).status_code == 200
    assert list(Annotation.objects.values_list("annotator", flat=True)) == [holder.pk]
    assert Item.objects.get(pk=only.pk).annotation_count == 1


def test_a_plain_form_post_outside_the_queue_gets_the_whole_page_saying_why(login, project) -> None:  # type: ignore[no-untyped-def]
    item = Item.objects.filter(project=project).first()
    assert item is not None
    response = login(member(project)).post(
        reverse("annotate:submit", args=[project.pk, item.pk]), {"strength": "1", "submission_uuid": str(uuid.uuid4())}
    )
    assert response.status_code == 409
    body = response.content.decode()
    assert "<html" in body
    assert f"Not saved: Item {item.number} was not handed to you" in body
    assert not Annotation.objects.exists()


def test_it_refuses_a_paused_annotator_s_submit_on_a_live_lease(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    leased = shown_item(take_next(client, project))
    pause(annotator, project)
    response = submit(client, project, leased)
    assert response.status_code == 403
    body = response.content.decode()
    assert "Not saved: A curator has paused your labeling in this project." in body
    assert 'data-testid="paused"' in body
    assert not Annotation.objects.exists()
    assert Item.objects.get(pk=leased).annotation_count == 0
    assert leases(annotator) == [(leased, Assignment.Status.LEASED)]


def test_a_paused_annotator_s_repeat_of_a_saved_submit_says_it_was_already_saved(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    card = take_next(client, project)
    first, token = shown_item(card), submission_uuid(card)
    assert submit(client, project, first, submission_uuid=token).status_code == 200
    before = leases(annotator)  # the item answered, and the next one, leased with the answer
    pause(annotator, project)
    again = submit(client, project, first, submission_uuid=token)
    assert again.status_code == 200
    body = again.content.decode()
    assert f"Already saved: item {item_number(first)} was submitted before with this answer." in body
    assert 'data-testid="paused"' in body, "and nothing new is handed out"
    assert Annotation.objects.filter(annotator=annotator).count() == 1
    assert leases(annotator) == before


def test_a_repeat_after_the_lease_went_to_others_still_says_what_happened(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    only = ItemFactory(project=project)
    client = login(member(project))
    card = take_next(client, project)
    token = submission_uuid(card)
    assert submit(client, project, only.pk, submission_uuid=token).status_code == 200
    again = submit(client, project, only.pk, submission_uuid=token, strength="3")
    assert again.status_code == 200
    assert f"Not saved: you already answered item {only.number}" in again.content.decode()
    assert list(Annotation.objects.values_list("strength", flat=True)) == [-2]


def test_a_skipped_item_cannot_then_be_submitted(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    first = shown_item(take_next(client, project))
    assert skip(client, project, first, **HTMX).status_code == 200
    response = submit(client, project, first)
    assert response.status_code == 409
    assert f"Not saved: You skipped item {item_number(first)}, so it cannot be submitted." in response.content.decode()
    assert not Annotation.objects.exists()


def test_a_gold_item_needs_a_lease_too(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1, gold_rate=0)
    gold = ItemFactory(project=project, is_gold=True)
    response = submit(login(member(project)), project, gold.pk)
    assert response.status_code == 409
    assert not Annotation.objects.exists()


def test_a_gold_lease_that_ran_out_is_still_the_annotator_s(login) -> None:  # type: ignore[no-untyped-def]
    """Gold items ignore overlap: however many took it meanwhile, nobody took this annotator's place."""
    project = ProjectFactory(overlap=1, gold_rate=0)
    gold = ItemFactory(project=project, is_gold=True, annotation_count=1)
    annotator = member(project)
    an_hour_ago = timezone.now() - timedelta(hours=1)
    AssignmentFactory(item=gold, annotator=annotator, leased_at=an_hour_ago, expires_at=an_hour_ago)
    assert submit(login(annotator), project, gold.pk).status_code == 200
    assert Annotation.objects.filter(item=gold, annotator=annotator).exists()


def test_skip_refuses_an_item_never_handed_out_and_a_paused_annotator(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    leased = shown_item(take_next(client, project))
    other = Item.objects.filter(project=project).exclude(pk=leased).first()
    assert other is not None
    refused = skip(client, project, other.pk, **HTMX)
    assert refused.status_code == 409
    assert f"Not skipped: Item {other.number} was not handed to you" in refused.content.decode()
    pause(annotator, project)
    paused = skip(client, project, leased, **HTMX)
    assert paused.status_code == 403
    assert "Not skipped: A curator has paused your labeling in this project." in paused.content.decode()
    assert leases(annotator) == [(leased, Assignment.Status.LEASED)]


def test_skipping_an_item_whose_lease_ran_out_is_taken(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    leased = shown_item(take_next(client, project))
    Assignment.objects.filter(annotator=annotator).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert skip(client, project, leased, **HTMX).status_code == 200
    assert leases(annotator)[0] == (leased, Assignment.Status.SKIPPED)


# The services refuse the same for every caller, not only the labeling page.


def test_the_submit_service_refuses_work_outside_the_queue(project) -> None:  # type: ignore[no-untyped-def]
    item = Item.objects.filter(project=project).first()
    assert item is not None
    annotator = member(project)
    labels = Labels(strength=1)
    with pytest.raises(OutsideQueue, match=f"Item {item.number} was not handed to you"):
        annotation_submit(item=item, annotator=annotator, labels=labels, seconds_spent=1, submission_uuid=uuid.uuid4())
    AssignmentFactory(item=item, annotator=annotator)
    pause(annotator, project)
    with pytest.raises(AnnotatorPaused):
        annotation_submit(item=item, annotator=annotator, labels=labels, seconds_spent=1, submission_uuid=uuid.uuid4())
    with pytest.raises(AnnotatorPaused):
        assignment_skip(item=item, annotator=annotator, reason="Outside my expertise")
    assert not Annotation.objects.exists()
    assert leases(annotator) == [(item.pk, Assignment.Status.LEASED)]


@pytest.mark.parametrize("paused", [False, True], ids=["never-handed-out", "paused"])
def test_a_broken_form_for_an_item_not_handed_out_does_not_show_that_item(login, project, paused) -> None:  # type: ignore[no-untyped-def]
    """A form refused for its fields shows the item again, so it must be the annotator's: otherwise posting a broken
    form to any item id would read items (gold ones included) the queue never gave out."""
    annotator = member(project)
    client = login(annotator)
    leased = shown_item(take_next(client, project))
    other = Item.objects.filter(project=project).exclude(pk=leased).first()
    assert other is not None
    if paused:
        pause(annotator, project)
    broken_submit = client.post(reverse("annotate:submit", args=[project.pk, other.pk]), {"strength": "1"})
    broken_skip = client.post(reverse("annotate:skip", args=[project.pk, other.pk]), {"reason": ""})
    for response in (broken_submit, broken_skip):
        assert response.status_code == (403 if paused else 409)
        body = response.content.decode()
        assert other.prompt[0]["content"] not in body
        assert other.response_a not in body
    assert not Annotation.objects.exists()
    assert leases(annotator) == [(leased, Assignment.Status.LEASED)]


def test_a_broken_form_for_the_annotators_own_item_is_shown_again_with_its_errors(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    leased = Item.objects.get(pk=shown_item(take_next(client, project)))
    response = client.post(reverse("annotate:submit", args=[project.pk, leased.pk]), {"strength": "1"})
    assert response.status_code == 422
    assert leased.prompt[0]["content"] in response.content.decode()
