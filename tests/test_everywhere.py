"""What every page shares (issue 14, items 8 and 9): error pages that say why, a favicon, the project tabs with the
current one marked, a skip link, and a login form that keeps the username after a wrong password."""

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.templatetags.static import static
from django.test import Client, override_settings
from django.urls import path, reverse

import concord.urls
from annotate.models import Role
from tests.annotate.factories import DEFAULT_PASSWORD, ItemFactory, ProjectFactory, UserFactory, member

LoginAs = Callable[[Any], Client]
SECRET = "database password hunter2 in /srv/concord/settings.py"


def explode(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(SECRET)


# The site's URLs plus one that fails, for the 500 page (handler500 is read from the root URLconf).
urlpatterns = [path("explode/", explode), *concord.urls.urlpatterns]
handler500 = concord.urls.handler500


def text_of(response: HttpResponse) -> str:
    return response.content.decode()


# Error pages.


@pytest.mark.django_db
def test_a_low_role_gets_a_403_page_with_the_access_helper_s_reason(login: LoginAs) -> None:
    project = ProjectFactory(name="Harbour")
    response = login(member(project, Role.ANNOTATOR)).get(reverse("annotate:item_list", args=[project.pk]))
    assert response.status_code == 403
    page = text_of(response)
    assert "This needs the curator role in Harbour." in page
    assert 'class="topbar"' in page  # in the site's layout
    assert f'href="{reverse("annotate:project_list")}"' in page
    assert "Back to your projects" in page


@pytest.mark.django_db
def test_a_project_the_user_is_not_in_is_a_404_that_names_nothing_of_it(login: LoginAs) -> None:
    project = ProjectFactory(name="Secret lighthouse")
    outsider = UserFactory()
    response = login(outsider).get(reverse("curation:review_queue", args=[project.pk]))
    assert response.status_code == 404
    page = text_of(response)
    assert "No such project." in page
    assert "Back to your projects" in page
    assert "Secret lighthouse" not in page
    assert 'class="project-nav"' not in page


@pytest.mark.django_db
def test_an_unknown_address_is_a_styled_404_without_the_resolver_s_insides(login: LoginAs) -> None:
    response = login(UserFactory()).get("/no/such/page/")
    assert response.status_code == 404
    page = text_of(response)
    assert "No page has this address." in page
    assert 'class="topbar"' in page
    assert "Resolver404" not in page
    assert "tried" not in page


@pytest.mark.django_db
@override_settings(ROOT_URLCONF=__name__, DEBUG=False)
def test_a_500_page_shows_nothing_of_what_failed() -> None:
    client = Client(raise_request_exception=False)
    client.force_login(UserFactory())
    response = client.get("/explode/")
    assert response.status_code == 500
    page = text_of(response)
    assert "Something went wrong" in page
    assert "Back to your projects" in page
    assert 'class="topbar"' in page  # the layout, not the bare fallback
    assert SECRET not in page
    assert "RuntimeError" not in page
    assert "Traceback" not in page


@pytest.mark.django_db
def test_a_form_refused_for_its_csrf_token_gets_a_page_that_says_what_to_do() -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(UserFactory())
    response = client.post(reverse("logout"))
    assert response.status_code == 403
    page = text_of(response)
    assert "This form has expired" in page
    assert "reload the page" in page
    assert 'class="topbar"' in page


# The favicon.


@pytest.mark.django_db
def test_the_favicon_is_linked_and_served_at_the_address_browsers_ask_for(login: LoginAs) -> None:
    page = text_of(login(UserFactory()).get(reverse("annotate:project_list")))
    assert f'<link rel="icon" href="{static("favicon.svg")}"' in page
    response = Client().get("/favicon.ico")
    assert response.status_code == 302
    assert response["Location"] == static("favicon.svg")
    icon = Client().get(response["Location"])
    assert icon.status_code == 200
    assert icon["Content-Type"] == "image/svg+xml"
    assert b"<svg" in b"".join(icon.streaming_content)  # type: ignore[attr-defined]


# The project tabs.


def tabs(page: str) -> dict[str, str]:
    """Each project tab's label -> its aria-current value ("" when not current)."""
    nav = page.split('<nav aria-label="Project">', 1)[1].split("</nav>", 1)[0]
    links = re.findall(r'<a href="[^"]+"(?: aria-current="(\w+)")?>([^<]+)</a>', nav)
    return {label: current for current, label in links}


@pytest.mark.django_db
def test_the_current_tab_is_marked_and_a_page_under_a_tab_marks_that_tab(login: LoginAs) -> None:
    project = ProjectFactory()
    item = ItemFactory(project=project)
    client = login(member(project, Role.CURATOR))
    queue = tabs(text_of(client.get(reverse("curation:review_queue", args=[project.pk]))))
    assert queue["Review"] == "page"
    assert {label for label, current in queue.items() if current} == {"Review"}
    adjudicate = tabs(text_of(client.get(reverse("curation:adjudicate", args=[project.pk, item.pk]))))
    assert adjudicate["Review"] == "true"
    assert adjudicate["Items"] == ""
    dashboard = tabs(text_of(client.get(reverse("curation:dashboard", args=[project.pk]))))
    assert dashboard["Dashboard"] == "page"
    assert dashboard["Review"] == ""


@pytest.mark.django_db
def test_the_tabs_follow_the_role_in_the_project(login: LoginAs) -> None:
    project = ProjectFactory()
    home = reverse("annotate:project_queue", args=[project.pk])
    curator_tabs = tabs(text_of(login(member(project, Role.CURATOR)).get(home)))
    assert "Review" in curator_tabs
    assert "Datasets" in curator_tabs
    assert "Settings" not in curator_tabs
    admin_tabs = tabs(text_of(login(member(project, Role.ADMIN)).get(home)))
    assert list(admin_tabs)[-6:] == ["Schema", "Settings", "Members", "Imports", "Training", "Selection"]
    annotator_page = text_of(login(member(project, Role.ANNOTATOR)).get(home))
    assert f'<a class="project-home" href="{home}" aria-current="page">' in annotator_page
    assert '<nav aria-label="Project">' not in annotator_page  # nothing to fold away


# The skip link.


@pytest.mark.django_db
def test_the_first_thing_a_keyboard_reaches_is_a_skip_link_to_the_content(login: LoginAs) -> None:
    project = ProjectFactory()
    page = text_of(login(member(project, Role.ADMIN)).get(reverse("annotate:project_queue", args=[project.pk])))
    body = page.split("<body", 1)[1]
    first_focusable = re.search(r"<(a|button|input|select|textarea|summary)\b[^>]*>", body)
    assert first_focusable
    assert first_focusable.group(0) == '<a class="skip-link" href="#content">'
    assert re.search(r'<main [^>]*id="content"', body)


# Logging in.


@pytest.mark.django_db
def test_a_wrong_password_keeps_the_username_and_says_what_was_wrong() -> None:
    UserFactory(username="ada")
    response = Client().post(reverse("login"), {"username": "ada", "password": "not-" + DEFAULT_PASSWORD})
    assert response.status_code == 200
    page = text_of(response)
    assert 'name="username" id="id_username" value="ada"' in page
    assert "Wrong username or password" in page
    assert "Type the password again" in page
    assert re.search(r'id="id_password"[^>]*autofocus', page)  # the cursor waits where the typing is


@pytest.mark.django_db
def test_the_lockout_still_answers_with_its_own_page() -> None:
    UserFactory(username="ada")
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = Client().post(reverse("login"), {"username": "ada", "password": "wrong"})
    assert response.status_code == 429
    assert 'data-testid="locked-out"' in text_of(response)
