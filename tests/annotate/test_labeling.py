"""The labeling flow over HTTP: leases, submits, skips and what the page shows."""

import re
import uuid
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotate.models import Annotation, Assignment, Item
from tests.annotate.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}


def shown_item(response) -> int | None:  # type: ignore[no-untyped-def]
    match = re.search(r'data-item-id="(\d+)"', response.content.decode())
    return int(match.group(1)) if match else None


def item_number(item_id: int) -> int:
    """The number in its project of the item with this id: what messages to people name."""
    return Item.objects.values_list("number", flat=True).get(pk=item_id)


def submission_uuid(response) -> str:  # type: ignore[no-untyped-def]
    match = re.search(r'name="submission_uuid" value="([^"]+)"', response.content.decode())
    assert match, "the labeling form carries a submission id"
    return match.group(1)


@pytest.fixture
def project():  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    ItemFactory.create_batch(3, project=project)
    return project


def take_next(client, project):  # type: ignore[no-untyped-def]
    """Take the next item (or renew the lease held) as the labeling page does, by htmx POST."""
    return client.post(reverse("annotate:label_next", args=[project.pk]), **HTMX)


def page(client, project):  # type: ignore[no-untyped-def]
    return client.get(reverse("annotate:label", args=[project.pk]))


def submit(client, project, item_id, **fields):  # type: ignore[no-untyped-def]
    data = {"strength": "-2", "justification": "A answers the question.", "submission_uuid": str(uuid.uuid4())}
    data.update(fields)
    return client.post(reverse("annotate:submit", args=[project.pk, item_id]), data, **HTMX)


def test_a_reload_shows_the_same_leased_item(login, project) -> None:  # type: ignore[no-untyped-def]
    client = login(member(project))
    first = shown_item(take_next(client, project))
    assert first is not None
    assert shown_item(page(client, project)) == first
    assert shown_item(take_next(client, project)) == first
    assert Assignment.objects.filter(item_id=first, status=Assignment.Status.LEASED).count() == 1


def test_submit_saves_and_swaps_in_the_next_item(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    card = take_next(client, project)
    first = shown_item(card)
    response = submit(client, project, first, submission_uuid=submission_uuid(card), seconds_spent="12.5")
    assert response.status_code == 200
    body = response.content.decode()
    assert "<html" not in body, "htmx gets only the item card"
    assert 'id="item-card"' in body
    assert shown_item(response) not in (None, first)
    annotation = Annotation.objects.get(item_id=first, annotator=annotator)
    assert (annotation.strength, annotation.justification, annotation.seconds_spent) == (
        -2,
        "A answers the question.",
        12.5,
    )
    assert Item.objects.get(pk=first).annotation_count == 1
    assert Assignment.objects.get(item_id=first, annotator=annotator).status == Assignment.Status.SUBMITTED


def test_a_plain_form_post_redirects_to_the_next_item(login, project) -> None:  # type: ignore[no-untyped-def]
    client = login(member(project))
    first = shown_item(take_next(client, project))
    response = client.post(
        reverse("annotate:submit", args=[project.pk, first]), {"strength": "3", "submission_uuid": str(uuid.uuid4())}
    )
    assert response.status_code == 302
    assert response["Location"] == reverse("annotate:label", args=[project.pk])
    # The POST leased the next item, so the page shows it without another click (no JavaScript needed).
    assert shown_item(client.get(response["Location"])) not in (None, first)


def test_resubmitting_the_same_submission_creates_no_second_annotation(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    first = shown_item(take_next(client, project))
    token = str(uuid.uuid4())
    assert submit(client, project, first, submission_uuid=token).status_code == 200
    assert submit(client, project, first, submission_uuid=token, strength="3").status_code == 200
    # A new id for an item already done is a repeat as well (e.g. a resent form after a reload).
    assert submit(client, project, first, strength="1").status_code == 200
    annotations = Annotation.objects.filter(item_id=first, annotator=annotator)
    assert [a.strength for a in annotations] == [-2]
    assert Item.objects.get(pk=first).annotation_count == 1


def test_a_resubmit_says_whether_it_was_saved_and_never_claims_a_save_that_did_not_happen(login, project) -> None:  # type: ignore[no-untyped-def]
    """Back, then Forward, showed a submitted item again; relabelling it answered "Saved." though nothing was."""
    annotator = member(project)
    client = login(annotator)
    card = take_next(client, project)
    first, token = shown_item(card), submission_uuid(card)
    assert "Saved." in submit(client, project, first, submission_uuid=token).content.decode()
    # The stale page posts its own submission id again, with another answer.
    stale = submit(client, project, first, submission_uuid=token, strength="3").content.decode()
    assert f"Not saved: you already answered item {item_number(first)}" in stale
    assert "Your first answer stands" in stale
    assert 'role="alert"' in stale
    assert "Saved." not in stale
    # The same answer again (a double click, a retry) is told it is already saved.
    again = submit(client, project, first, submission_uuid=token).content.decode()
    assert f"Already saved: item {item_number(first)} was submitted before with this answer." in again
    # A plain form post (no JavaScript) hears the same, after the redirect.
    plain = client.post(
        reverse("annotate:submit", args=[project.pk, first]),
        {"strength": "1", "submission_uuid": str(uuid.uuid4())},
        follow=True,
    )
    assert "Your first answer stands" in plain.content.decode()
    assert [a.strength for a in Annotation.objects.filter(item_id=first, annotator=annotator)] == [-2]


def test_the_labeling_page_is_never_cached(login, project) -> None:  # type: ignore[no-untyped-def]
    response = page(login(member(project)), project)
    assert "no-store" in response["Cache-Control"]


def test_a_submission_id_cannot_be_reused_for_another_item(login, project) -> None:  # type: ignore[no-untyped-def]
    client = login(member(project))
    first = shown_item(take_next(client, project))
    token = str(uuid.uuid4())
    second = shown_item(submit(client, project, first, submission_uuid=token))
    response = submit(client, project, second, submission_uuid=token)
    assert response.status_code == 422
    assert "belongs to another annotation" in response.content.decode()
    assert not Annotation.objects.filter(item_id=second).exists()


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"strength": "5"}, "Select a valid choice"),
        ({"strength": ""}, "Choose which response is better"),
        ({"submission_uuid": "not-a-uuid"}, "Enter a valid UUID"),
        ({"justification": "x" * 10_001}, "at most 10000 characters"),
    ],
)
def test_invalid_submissions_are_refused_with_a_message(login, project, fields, message) -> None:  # type: ignore[no-untyped-def]
    client = login(member(project))
    first = shown_item(take_next(client, project))
    response = submit(client, project, first, **fields)
    assert response.status_code == 422
    assert message in response.content.decode()
    assert shown_item(response) == first, "the same item stays on screen"
    assert not Annotation.objects.exists()


def test_skip_needs_a_reason_and_the_item_is_not_offered_again(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    first = shown_item(take_next(client, project))
    url = reverse("annotate:skip", args=[project.pk, first])
    refused = client.post(url, {"reason": "  "}, **HTMX)
    assert refused.status_code == 422
    assert "Say why you skip this item" in refused.content.decode()
    response = client.post(url, {"reason": "Outside my expertise"}, **HTMX)
    assert response.status_code == 200
    assert shown_item(response) != first
    assignment = Assignment.objects.get(item_id=first, annotator=annotator)
    assert (assignment.status, assignment.skip_reason) == (Assignment.Status.SKIPPED, "Outside my expertise")
    seen = {first}
    for _ in range(5):
        item = shown_item(take_next(client, project))
        if item is None:
            break
        seen.add(item)
        submit(client, project, item)
    assert Annotation.objects.filter(annotator=annotator).count() == 2
    assert not Annotation.objects.filter(annotator=annotator, item_id=first).exists()


def test_least_annotated_items_come_first(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=3)
    busy, fresh = ItemFactory(project=project), ItemFactory(project=project)
    Item.objects.filter(pk=busy.pk).update(annotation_count=2)
    assert shown_item(take_next(login(member(project)), project)) == fresh.pk


def test_it_never_assigns_beyond_overlap(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    only = ItemFactory(project=project)
    first, second = login(member(project)), login(member(project))
    assert shown_item(take_next(first, project)) == only.pk
    empty = take_next(second, project)
    assert shown_item(empty) is None
    assert 'data-testid="queue-empty"' in empty.content.decode()


def test_an_expired_lease_goes_to_someone_else_and_a_late_submit_is_refused(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    only = ItemFactory(project=project)
    slow, quick = member(project), member(project)
    slow_client, quick_client = login(slow), login(quick)
    assert shown_item(take_next(slow_client, project)) == only.pk
    Assignment.objects.filter(annotator=slow).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert shown_item(take_next(quick_client, project)) == only.pk
    late = submit(slow_client, project, only.pk)
    assert late.status_code == 409
    assert (
        f"Not saved: Your time on item {only.number} ran out and it has gone to other annotators."
        in late.content.decode()
    )
    assert submit(quick_client, project, only.pk).status_code == 200
    assert list(Annotation.objects.values_list("annotator", flat=True)) == [quick.pk]


def test_an_expired_lease_can_still_be_submitted_while_there_is_room(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    first = shown_item(take_next(client, project))
    Assignment.objects.filter(annotator=annotator).update(expires_at=timezone.now() - timedelta(minutes=1))
    assert submit(client, project, first).status_code == 200
    assert Annotation.objects.filter(item_id=first, annotator=annotator).exists()


def test_model_outputs_are_escaped(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(guidelines="Read <script>alert(1)</script> **carefully**")
    ItemFactory(
        project=project,
        prompt=[{"role": "user", "content": "<img src=x onerror=alert(1)>"}],
        response_a="<script>alert('a')</script>\n  indented",
        response_b='<a href="javascript:alert(1)">click</a>',
    )
    client = login(member(project))
    body = take_next(client, project).content.decode()
    assert "<script>alert('a')</script>" not in body
    assert "&lt;script&gt;alert(&#x27;a&#x27;)&lt;/script&gt;\n  indented" in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body
    assert '<a href="javascript:alert(1)">' not in body
    queue = client.get(reverse("annotate:project_queue", args=[project.pk])).content.decode()
    assert "<script>alert(1)</script>" not in queue
    assert "<strong>carefully</strong>" in queue


def test_the_queue_page_shows_progress(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    submit(client, project, shown_item(take_next(client, project)))
    body = client.get(reverse("annotate:project_queue", args=[project.pk])).content.decode()
    assert re.search(r'id="done-count">1<', body)
    assert re.search(r'id="remaining-count">2<', body)


def test_a_paused_annotator_gets_no_work_and_is_told_why(login, project) -> None:  # type: ignore[no-untyped-def]
    from annotate.models import Membership

    annotator = member(project)
    Membership.objects.filter(user=annotator).update(is_paused=True)
    client = login(annotator)
    for response in (page(client, project), take_next(client, project)):
        assert shown_item(response) is None
        assert 'data-testid="paused"' in response.content.decode()
    assert not Assignment.objects.filter(annotator=annotator).exists()


def test_extra_overlap_brings_a_finished_item_back(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    item = ItemFactory(project=project, annotation_count=1)
    client = login(member(project))
    assert shown_item(take_next(client, project)) is None
    Item.objects.filter(pk=item.pk).update(extra_overlap=1)
    assert shown_item(take_next(client, project)) == item.pk
