"""Leases are taken and renewed by POST only (issue 12, item 9): a GET of the labeling page, such as a link followed
from another site, shows the item already held, or a button that takes the next one, and writes nothing."""

import json
import re
from datetime import timedelta

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from annotate.models import Assignment, Membership
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.annotate.test_labeling import HTMX, shown_item, take_next

pytestmark = pytest.mark.django_db

TAKES_AT_ONCE = 'hx-trigger="load, submit"'


@pytest.fixture
def project():  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    ItemFactory.create_batch(3, project=project)
    return project


def csrf_client(user) -> Client:  # type: ignore[no-untyped-def]
    """A browser-like client: CSRF checked, as for a request forged by another site."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    return client


def page(client, project, **headers: str):  # type: ignore[no-untyped-def]
    return client.get(reverse("annotate:label", args=[project.pk]), **headers)


def leases(annotator) -> list[tuple[int, object]]:  # type: ignore[no-untyped-def]
    return list(Assignment.objects.filter(annotator=annotator).values_list("item", "expires_at"))


def test_a_get_takes_no_lease(project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    response = page(csrf_client(annotator), project, HTTP_SEC_FETCH_SITE="cross-site")
    assert response.status_code == 200
    body = response.content.decode()
    assert shown_item(response) is None
    assert 'data-testid="queue-next"' in body
    assert f'<form method="post" action="{reverse("annotate:label_next", args=[project.pk])}"' in body
    assert not Assignment.objects.exists()


def test_a_get_renews_no_lease_and_shows_the_item_held(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    held = shown_item(take_next(login(annotator), project))
    soon = timezone.now() + timedelta(minutes=1)
    Assignment.objects.filter(annotator=annotator).update(expires_at=soon)
    response = page(csrf_client(annotator), project)
    assert shown_item(response) == held
    assert leases(annotator) == [(held, soon)]


def test_the_post_takes_the_next_item_and_renews_the_one_held(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    held = shown_item(take_next(client, project))
    assert held is not None
    [(_, first_expiry)] = leases(annotator)
    soon = timezone.now() + timedelta(minutes=1)
    Assignment.objects.filter(annotator=annotator).update(expires_at=soon)
    assert shown_item(take_next(client, project)) == held
    [(item, renewed)] = leases(annotator)
    assert item == held
    assert renewed >= first_expiry > soon


def test_the_post_needs_the_csrf_token_the_page_gives_htmx(project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = csrf_client(annotator)
    url = reverse("annotate:label_next", args=[project.pk])
    assert client.post(url, **HTMX).status_code == 403
    assert not Assignment.objects.exists()
    # htmx sends the token from the hx-headers of <body>.
    headers = re.search(r"<body hx-headers='([^']+)'>", page(client, project).content.decode())
    assert headers is not None
    token = json.loads(headers.group(1))["X-CSRFToken"]
    response = client.post(url, HTTP_X_CSRFTOKEN=token, **HTMX)
    assert response.status_code == 200
    assert shown_item(response) is not None
    assert Assignment.objects.filter(annotator=annotator, status=Assignment.Status.LEASED).count() == 1


def test_a_plain_form_post_is_sent_to_the_page_which_shows_the_item_taken(login, project) -> None:  # type: ignore[no-untyped-def]
    client = login(member(project))
    response = client.post(reverse("annotate:label_next", args=[project.pk]))
    assert response.status_code == 302
    assert response["Location"] == reverse("annotate:label", args=[project.pk])
    [leased] = Assignment.objects.values_list("item", flat=True)
    assert shown_item(client.get(response["Location"])) == leased


def test_taking_an_item_needs_post(login, project) -> None:  # type: ignore[no-untyped-def]
    response = login(member(project)).get(reverse("annotate:label_next", args=[project.pk]))
    assert response.status_code == 405
    assert not Assignment.objects.exists()


@pytest.mark.parametrize(
    ("sec_fetch_site", "at_once"),
    [("same-origin", True), ("none", True), ("same-site", False), ("cross-site", False), (None, False)],
)
def test_the_page_takes_the_next_item_as_it_loads_only_on_a_visit_from_this_site(  # type: ignore[no-untyped-def]
    login, project, sec_fetch_site, at_once
) -> None:
    """From another site (or a browser that does not say), taking the item is one click on the button."""
    headers = {"HTTP_SEC_FETCH_SITE": sec_fetch_site} if sec_fetch_site else {}
    body = page(login(member(project)), project, **headers).content.decode()
    assert (TAKES_AT_ONCE in body) is at_once
    assert "Take the next item</button>" in body
    assert not Assignment.objects.exists()


def test_a_paused_annotator_holding_a_lease_sees_the_paused_card_not_the_item(login, project) -> None:  # type: ignore[no-untyped-def]
    annotator = member(project)
    client = login(annotator)
    assert shown_item(take_next(client, project)) is not None
    Membership.objects.filter(user=annotator).update(is_paused=True)
    body = page(client, project, HTTP_SEC_FETCH_SITE="same-origin").content.decode()
    assert 'data-testid="paused"' in body
    assert 'data-item-id="' not in body
    assert TAKES_AT_ONCE not in body


def test_anonymous_users_are_sent_to_login_and_take_nothing(client, project) -> None:  # type: ignore[no-untyped-def]
    response = client.post(reverse("annotate:label_next", args=[project.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))
    assert not Assignment.objects.exists()


def test_outsiders_take_nothing(login, project) -> None:  # type: ignore[no-untyped-def]
    outsider = member(ProjectFactory())
    assert login(outsider).post(reverse("annotate:label_next", args=[project.pk])).status_code == 404
    assert not Assignment.objects.exists()
