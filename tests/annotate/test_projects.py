"""Creating projects, changing their settings and managing members, over HTTP."""

import pytest
from django.urls import reverse

from annotate.models import Membership, Project, Role
from tests.annotate.factories import AssignmentFactory, ItemFactory, ProjectFactory, UserFactory, member

pytestmark = pytest.mark.django_db


def test_staff_create_a_project_and_become_its_admin(login) -> None:  # type: ignore[no-untyped-def]
    staff = UserFactory(is_staff=True)
    client = login(staff)
    data = {
        "name": "Helpfulness",
        "guidelines": "Be kind.",
        "overlap": 3,
        "lease_minutes": 20,
        "pair_mode": "all",
        "gold_rate": 0,
    }
    response = client.post(reverse("annotate:project_new"), data)
    project = Project.objects.get(name="Helpfulness")
    assert response.status_code == 302
    assert response["Location"] == reverse("annotate:project_queue", args=[project.pk])
    assert Membership.objects.get(project=project, user=staff).role == Role.ADMIN


def test_other_users_cannot_create_projects(login) -> None:  # type: ignore[no-untyped-def]
    client = login(UserFactory())
    assert client.get(reverse("annotate:project_new")).status_code == 403
    assert (
        client.post(reverse("annotate:project_new"), {"name": "x", "overlap": 1, "lease_minutes": 1}).status_code == 403
    )
    assert not Project.objects.exists()


def test_invalid_settings_are_refused_with_the_field_named(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2)
    client = login(member(project, Role.ADMIN))
    data = {
        "name": project.name,
        "guidelines": "",
        "overlap": 0,
        "lease_minutes": 30,
        "pair_mode": "all",
        "gold_rate": 0,
    }
    response = client.post(reverse("annotate:project_settings", args=[project.pk]), data)
    assert response.status_code == 422
    assert "Overlap: Ensure this value is greater than or equal to 1." in response.content.decode()
    project.refresh_from_db()
    assert project.overlap == 2


def test_raising_overlap_sends_finished_items_back_to_the_queue(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    ItemFactory(project=project, annotation_count=1)
    admin, annotator = member(project, Role.ADMIN), member(project)
    take_next = reverse("annotate:label_next", args=[project.pk])
    assert b'data-testid="queue-empty"' in login(annotator).post(take_next).content
    data = {
        "name": project.name,
        "guidelines": "",
        "overlap": 2,
        "lease_minutes": 30,
        "pair_mode": "all",
        "gold_rate": 0,
    }
    assert login(admin).post(reverse("annotate:project_settings", args=[project.pk]), data).status_code == 302
    page = login(annotator).post(take_next, follow=True).content
    assert b"data-item-id" in page


def test_admins_add_members_and_change_roles(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    client = login(member(project, Role.ADMIN))
    newcomer = UserFactory(username="newcomer")
    url = reverse("annotate:project_members", args=[project.pk])
    assert client.post(url, {"username": "newcomer", "role": Role.ANNOTATOR}).status_code == 302
    assert client.post(url, {"username": "newcomer", "role": Role.CURATOR}).status_code == 302
    assert Membership.objects.get(project=project, user=newcomer).role == Role.CURATOR
    unknown = client.post(url, {"username": "nobody", "role": Role.ANNOTATOR})
    assert unknown.status_code == 422
    assert "No active user is called &#x27;nobody&#x27;." in unknown.content.decode()


def test_the_last_admin_cannot_leave_or_be_demoted(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    admin = member(project, Role.ADMIN, username="only-admin")
    client = login(admin)
    url = reverse("annotate:project_members", args=[project.pk])
    demoted = client.post(url, {"username": "only-admin", "role": Role.ANNOTATOR})
    assert "at least one admin" in demoted.content.decode()
    membership = Membership.objects.get(project=project, user=admin)
    client.post(reverse("annotate:member_remove", args=[project.pk, membership.pk]))
    membership.refresh_from_db()
    assert membership.role == Role.ADMIN


def test_members_of_other_projects_are_not_found(login) -> None:  # type: ignore[no-untyped-def]
    mine, theirs = ProjectFactory(), ProjectFactory()
    client = login(member(mine, Role.ADMIN))
    foreign = Membership.objects.get(user=member(theirs))
    for project in (mine, theirs):
        response = client.post(reverse("annotate:member_remove", args=[project.pk, foreign.pk]))
        assert response.status_code == 404
    assert Membership.objects.filter(pk=foreign.pk).exists()


def test_annotators_cannot_manage_the_project(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    client = login(member(project, Role.CURATOR))
    for name in ["annotate:project_settings", "annotate:project_members"]:
        assert client.get(reverse(name, args=[project.pk])).status_code == 403


def test_a_project_with_annotations_can_be_deleted() -> None:
    import uuid

    from annotate.labels import Labels
    from annotate.services.labeling import annotation_submit

    project = ProjectFactory()
    item = ItemFactory(project=project)
    annotator = member(project)
    AssignmentFactory(item=item, annotator=annotator)
    annotation_submit(
        item=item, annotator=annotator, labels=Labels(strength=1), seconds_spent=1, submission_uuid=uuid.uuid4()
    )
    project.delete()
    assert not Project.objects.filter(pk=project.pk).exists()
