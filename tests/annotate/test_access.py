"""Roles and scoping: every view goes through annotate.access, so foreign ids are 404 and low roles 403."""

import pytest
from django.urls import reverse

from annotate.models import Role
from tests.annotate.factories import ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_projects():  # type: ignore[no-untyped-def]
    mine, theirs = ProjectFactory(), ProjectFactory()
    return mine, theirs, ItemFactory(project=mine), ItemFactory(project=theirs)


def test_anonymous_users_are_sent_to_login(client, two_projects) -> None:  # type: ignore[no-untyped-def]
    mine, _, _, _ = two_projects
    response = client.get(reverse("annotate:label", args=[mine.pk]))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


def test_it_hides_projects_the_user_is_not_in(login, two_projects) -> None:  # type: ignore[no-untyped-def]
    mine, theirs, _, _ = two_projects
    client = login(member(mine))
    assert client.get(reverse("annotate:project_queue", args=[mine.pk])).status_code == 200
    for name in ["annotate:project_queue", "annotate:label", "annotate:import_list"]:
        assert client.get(reverse(name, args=[theirs.pk])).status_code == 404, name
    assert client.get(reverse("annotate:project_queue", args=[999_999])).status_code == 404
    listing = client.get(reverse("annotate:project_list")).content.decode()
    assert mine.name in listing
    assert theirs.name not in listing


def test_it_rejects_foreign_item(login, two_projects) -> None:  # type: ignore[no-untyped-def]
    mine, theirs, _, foreign_item = two_projects
    client = login(member(mine))
    for name in ["annotate:submit", "annotate:skip"]:
        # The foreign item id under my project, and under its own project: both 404.
        for project in (mine, theirs):
            url = reverse(name, args=[project.pk, foreign_item.pk])
            response = client.post(url, {"strength": "1", "submission_uuid": "0" * 32, "reason": "x"})
            assert response.status_code == 404, (name, project)
    assert not foreign_item.annotations.exists()


def test_an_annotator_cannot_open_admin_pages(login, two_projects) -> None:  # type: ignore[no-untyped-def]
    mine, _, _, _ = two_projects
    url = reverse("annotate:import_list", args=[mine.pk])
    assert login(member(mine, Role.ANNOTATOR)).get(url).status_code == 403
    assert login(member(mine, Role.CURATOR)).get(url).status_code == 403
    assert login(member(mine, Role.ADMIN)).get(url).status_code == 200


def test_writes_need_post(login, two_projects) -> None:  # type: ignore[no-untyped-def]
    mine, _, item, _ = two_projects
    client = login(member(mine))
    assert client.get(reverse("annotate:submit", args=[mine.pk, item.pk])).status_code == 405


def test_csrf_is_enforced(two_projects) -> None:  # type: ignore[no-untyped-def]
    from django.test import Client

    mine, _, item, _ = two_projects
    user = member(mine)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post(
        reverse("annotate:submit", args=[mine.pk, item.pk]), {"strength": "1", "submission_uuid": "0" * 32}
    )
    assert response.status_code == 403
    assert not item.annotations.exists()
