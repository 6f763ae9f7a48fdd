"""The access matrix, run over every URL pattern that names an object (found by walking the URL resolver, web and
API): each user who must not reach a P1 object (every role of P2 alone, an outsider, P1 members below the view's
role, anonymous) sends GET and POST with a valid CSRF token and gets a refusal (404 for a foreign object, 403 or 404
for a low role, the login page or 401 for anonymous, 405 for a method the view does not take), and the database is
the same after the request as before it. Issue 12's "Keep it closed".

A new URL argument fails test_every_url_argument_names_an_object_of_the_world until ARGUMENTS says which object it
names; a new view fails test_every_view_has_a_minimum_role until MIN_ROLE says who may use it."""

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.contrib.contenttypes.models import ContentType
from django.db import transaction
from django.http import HttpResponse
from django.test import Client, override_settings
from django.urls import reverse

from annotate.models import Project, Role
from tests.security.routes import Route, all_routes
from tests.security.world import (
    ProjectWorld,
    World,
    build_world,
    changed_tables,
    csrf_client,
    database_fingerprint,
    token_client,
)

A, C, AD = Role.ANNOTATOR, Role.CURATOR, Role.ADMIN

# The lowest project role that may use each view, by method; a method not listed is answered 405. Checked both
# ways: the role gets through (test_the_minimum_role_gets_through) and every role below it is refused.
MIN_ROLE: dict[str, dict[str, str]] = {
    "annotate:project_queue": {"GET": A},
    "annotate:project_settings": {"GET": AD, "POST": AD},
    "annotate:project_members": {"GET": AD, "POST": AD},
    "annotate:member_remove": {"POST": AD},
    "annotate:label": {"GET": A},
    "annotate:label_next": {"POST": A},
    "annotate:submit": {"POST": A},
    "annotate:skip": {"POST": A},
    "annotate:schema_edit": {"GET": AD, "POST": AD},
    "annotate:item_list": {"GET": C},
    "annotate:item_detail": {"GET": C, "POST": C},
    "annotate:item_gold_remove": {"POST": C},
    "annotate:import_list": {"GET": AD, "POST": AD},
    "annotate:import_detail": {"GET": AD},
    "curation:review_queue": {"GET": C},
    "curation:review_threshold": {"POST": C},
    "curation:adjudicate": {"GET": C, "POST": C},
    "curation:item_flag": {"POST": A},
    "curation:annotator_quality": {"GET": C},
    "curation:quality_refresh": {"POST": C},
    "curation:member_pause": {"POST": C},
    "curation:member_weight": {"POST": C},
    "curation:dashboard": {"GET": C},
    "curation:version_list": {"GET": C},
    "curation:version_new": {"GET": C, "POST": C},
    "curation:version_detail": {"GET": C},
    "curation:version_freeze": {"POST": C},
    "curation:export_create": {"POST": C},
    "curation:export_download": {"GET": C},
    "training:run_list": {"GET": AD},
    "training:run_create": {"POST": AD},
    "training:run_detail": {"GET": AD},
    "training:run_log": {"GET": AD},
    "training:run_cancel": {"POST": AD},
    "training:run_resume": {"POST": AD},
    "training:run_promote": {"POST": AD},
    "training:scoring_create": {"POST": AD},
    "training:campaign_list": {"GET": C, "POST": AD},
    "training:campaign_detail": {"GET": C},
    "training:campaign_stop": {"POST": AD},
    "training:campaign_round_close": {"POST": C},
    "training:decision_list": {"GET": C},
    "training:decision_override": {"POST": C},
    "curation:items_bulk": {"POST": C},
    "curation:version_count": {"GET": C},
    "training:selection": {"GET": AD},
    "training:selection_update": {"POST": AD},
    "training:selection_run_start": {"POST": AD},
    # The API has no project in its URLs: a version and its exports are for curators of every project in it.
    "api:version-detail": {"GET": C},
    "api:version-exports": {"GET": C, "POST": C},
    "api:version-manifest": {"GET": C},
    "api:export-detail": {"GET": C},
    "api:export-download": {"GET": C},
}

# Which object of a project's world each URL argument names (a DRF route's `pk` by its router basename).
ARGUMENTS: dict[str, Callable[[ProjectWorld], object]] = {
    "project_id": lambda w: w.project.pk,
    "item_id": lambda w: w.item.pk,
    "membership_id": lambda w: w.memberships[A].pk,
    "batch_id": lambda w: w.batch.pk,
    "version_id": lambda w: w.version.pk,
    "job_id": lambda w: w.job.pk,
    "run_id": lambda w: w.run.pk,
    "campaign_id": lambda w: w.campaign.pk,
    "decision_id": lambda w: w.decision.pk,
    "version.pk": lambda w: w.version.pk,
    "export.pk": lambda w: w.job.pk,
    # Not ids: a round's number within its campaign, and a DRF format suffix.
    "number": lambda w: w.round.number,
    "format": lambda w: "json",
}
NOT_IDS = {"number", "format"}

# What a form might want, so that a POST the access check let through would have something to act on.
POST_DATA = {
    "strength": "1",
    "reason": "refused",
    "decision": "accept",
    "weight": "0.5",
    "threshold": "0.9",
    "format": "trl",
    "name": "refused",
    "role": "annotator",
    "preference_sign": "1",
}
METHODS = ("GET", "POST")
API_ROOT = "/api/"


def argument_key(route: Route, argument: str) -> str:
    basename = route.drf_basename
    return f"{basename}.{argument}" if basename and argument == "pk" else argument


def id_arguments(route: Route) -> list[str]:
    return [name for name in route.arguments if name not in NOT_IDS]


def matrix_routes() -> list[Route]:
    """Every route but the Django admin's (tested on its own, below) that names an object."""
    return [r for r in all_routes() if r.namespace != "admin" and id_arguments(r)]


def values_for(route: Route, world: ProjectWorld, **swapped: ProjectWorld) -> dict[str, object]:
    """The route's arguments naming `world`'s objects, except those in `swapped` (argument -> another world)."""
    return {name: ARGUMENTS[argument_key(route, name)](swapped.get(name, world)) for name in route.arguments}


def is_api(route: Route) -> bool:
    return route.namespace == "api"


# Who asks.


@dataclass(frozen=True)
class Visitor:
    name: str
    user: Callable[[World], AbstractBaseUser | None]
    role_in_p1: str | None  # None: not a member of P1


VISITORS = [
    Visitor("anonymous", lambda w: None, None),
    Visitor("outsider", lambda w: w.outsider, None),
    *[Visitor(f"P2 {role}", lambda w, role=role: w.p2.members[role], None) for role in (A, C, AD)],  # type: ignore[misc]
    Visitor("P1 annotator", lambda w: w.p1.members[A], A),
    Visitor("P1 curator", lambda w: w.p1.members[C], C),
    Visitor("annotator in P1 and curator in P2", lambda w: w.cross, A),
]


@dataclass
class Sent:
    """A request's answer and the tables it changed."""

    response: HttpResponse
    changed: list[str]


class Caller:
    """Clients of every visitor (a session with a CSRF token; for the API also a token alone), and a way to send a
    request and see what it wrote."""

    def __init__(self, world: World) -> None:
        # Logged in now, in the module's transaction: a session made inside a test would go with its savepoint.
        users = [world.outsider, world.cross, world.both_admin, *world.p1.members.values(), *world.p2.members.values()]
        self.world = world
        self._sessions: dict[int | None, Client] = {user.pk: csrf_client(user) for user in users}
        self._sessions[None] = csrf_client(None)

    def session(self, user: AbstractBaseUser | None) -> Client:
        return self._sessions[user.pk if user else None]

    def clients(self, user: AbstractBaseUser | None, route: Route) -> Iterator[tuple[str, Client]]:
        yield "session", self.session(user)
        if is_api(route) and user is not None:
            yield "token", token_client(self.world.tokens[user.pk])

    def send(self, client: Client, method: str, url: str) -> Sent:
        before = database_fingerprint()
        if method == "GET":
            response = client.get(url)
        elif url.startswith(API_ROOT):
            response = client.post(url, POST_DATA, content_type="application/json")  # as API clients send
        else:
            response = client.post(url, POST_DATA)
        return Sent(response, changed_tables(before, database_fingerprint()))


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[World]:  # type: ignore[no-untyped-def]
    """One world for the module, in a transaction rolled back at its end; each test runs in a savepoint of it."""
    with (
        override_settings(MEDIA_ROOT=str(tmp_path_factory.mktemp("media")), REST_FRAMEWORK=unthrottled()),
        django_db_blocker.unblock(),
        transaction.atomic(),
    ):
        yield build_world()
        transaction.set_rollback(True)


def unthrottled() -> dict[str, Any]:
    """The API's settings with rates no test reaches: the matrix sends hundreds of requests from one address
    (throttling has tests of its own), and a 429 must not pass for a refusal."""
    api = settings.REST_FRAMEWORK
    return {**api, "DEFAULT_THROTTLE_RATES": {scope: "1000000/s" for scope in api.get("DEFAULT_THROTTLE_RATES", {})}}


@pytest.fixture(scope="module")
def caller(world: World, django_db_blocker) -> Caller:  # type: ignore[no-untyped-def]
    with django_db_blocker.unblock():
        return Caller(world)


@pytest.fixture(autouse=True)
def no_jobs_leave(sent_jobs: list[tuple[str, int]]) -> None:
    """A request let through by mistake must not reach a broker (sent_jobs records instead of sending)."""


# What a refusal is.


def _is_login_redirect(response: HttpResponse) -> bool:
    return response.status_code == 302 and response["Location"].startswith(reverse("login"))


def refusal_problem(route: Route, method: str, role: str | None, anonymous: bool, response: HttpResponse) -> str:
    """'' when the response refuses as it should; else what is wrong. `role`: the visitor's role in the project the
    URL names (None: not a member)."""
    status = response.status_code
    allowed = MIN_ROLE[route.name]
    if method not in allowed:
        ok = status == 405 or (anonymous and (_is_login_redirect(response) or status in (401, 403)))
        return "" if ok else f"{status}, expected 405"
    if anonymous:
        ok = status in (401, 403) if is_api(route) else _is_login_redirect(response)
        return "" if ok else f"{status}, expected {'401' if is_api(route) else 'a redirect to the login page'}"
    if role is None:
        return "" if status == 404 else f"{status}, expected 404 (a foreign object)"
    if Role.rank(role) < Role.rank(allowed[method]):
        return "" if status in (403, 404) else f"{status}, expected 403 or 404 ({role} < {allowed[method]})"
    return ""


def may_use(route: Route, method: str, role: str | None) -> bool:
    needed = MIN_ROLE[route.name].get(method)
    return role is not None and needed is not None and Role.rank(role) >= Role.rank(needed)


def check(
    caller: Caller, route: Route, url: str, user: AbstractBaseUser | None, role: str | None, who: str
) -> list[str]:
    """Every problem with the answers to `user`'s GET and POST of `url`."""
    problems = []
    for method in [m for m in METHODS if not may_use(route, m, role)]:
        for how, client in caller.clients(user, route):
            sent = caller.send(client, method, url)
            problem = refusal_problem(route, method, role, user is None, sent.response)
            if sent.changed:
                problem = f"{problem}; wrote to {', '.join(sent.changed)}".lstrip("; ")
            if problem:
                problems.append(f"{method} {url} as {who} ({how}): {problem}")
    return problems


# The tables must know every route.


def test_every_url_argument_names_an_object_of_the_world() -> None:
    unknown = {
        f"{route.name}: {argument_key(route, name)}"
        for route in matrix_routes()
        for name in route.arguments
        if argument_key(route, name) not in ARGUMENTS
    }
    assert not unknown, f"say in ARGUMENTS which object these name: {sorted(unknown)}"


def test_every_view_has_a_minimum_role() -> None:
    names = {route.name for route in matrix_routes()}
    assert names - MIN_ROLE.keys() == set(), "say in MIN_ROLE who may use these"
    assert MIN_ROLE.keys() - names == set(), "these are no longer URLs: take them out of MIN_ROLE"


def test_the_walk_finds_the_web_and_api_views_that_name_objects() -> None:
    names = {route.name for route in matrix_routes()}
    assert {"annotate:item_detail", "curation:export_download", "training:decision_override"} <= names
    assert {"api:version-detail", "api:export-download"} <= names


# The matrix.

ROUTES = matrix_routes()


@pytest.mark.django_db
@pytest.mark.parametrize("route", ROUTES, ids=[r.test_id for r in ROUTES])
def test_no_one_below_the_view_s_role_reaches_a_p1_object(route: Route, world: World, caller: Caller) -> None:
    url = route.url(values_for(route, world.p1))
    problems: list[str] = []
    for visitor in VISITORS:
        problems += check(caller, route, url, visitor.user(world), visitor.role_in_p1, visitor.name)
    assert not problems, "\n".join(problems)


@pytest.mark.django_db
@pytest.mark.parametrize("route", ROUTES, ids=[r.test_id for r in ROUTES])
def test_the_minimum_role_gets_through(route: Route, world: World, caller: Caller) -> None:
    """The other half of MIN_ROLE: its role is not refused (so the table is not stricter than the view, and the
    CSRF token the matrix sends is good)."""
    url = route.url(values_for(route, world.p1))
    problems = []
    for method, role in MIN_ROLE[route.name].items():
        user = world.p1.members[role]
        for how, client in caller.clients(user, route):
            status = caller.send(client, method, url).response.status_code
            refused = status in (401, 403, 404, 405) or status >= 500 or (method == "GET" and status >= 400)
            if refused:
                problems.append(f"{method} {url} as P1 {role} ({how}): {status}")
    assert not problems, "\n".join(problems)


# Ids of two projects in one URL.

MIXED_ROUTES = [route for route in ROUTES if len(id_arguments(route)) >= 2]


def mixed_values(route: Route, world: World) -> Iterator[tuple[str, dict[str, object], Project]]:
    """The route with each id in turn naming P2's object and the rest P1's, then with every id but the project's
    naming P2's; and the project the URL names."""
    for name in id_arguments(route):
        yield (
            f"{name} of P2",
            values_for(route, world.p1, **{name: world.p2}),
            (world.p2 if name == "project_id" else world.p1).project,
        )
    others = {name: world.p2 for name in id_arguments(route) if name != "project_id"}
    yield "all but project_id of P2", values_for(route, world.p1, **others), world.p1.project


@pytest.mark.django_db
@pytest.mark.parametrize("route", MIXED_ROUTES, ids=[r.test_id for r in MIXED_ROUTES])
def test_an_object_under_another_project_s_id_is_404(route: Route, world: World, caller: Caller) -> None:
    """/projects/<P2>/items/<P1 item>/ and the like: 404, even for an admin of both projects."""
    visitors = {"admin of both": world.both_admin, "P2 curator": world.p2.members[C], "P2 admin": world.p2.members[AD]}
    problems: list[str] = []
    for variant, values, project in mixed_values(route, world):
        url = route.url(values)
        for who, user in visitors.items():
            role = project.memberships.filter(user=user).values_list("role", flat=True).first()
            for method in METHODS:
                sent = caller.send(caller.session(user), method, url)
                status = sent.response.status_code
                if method not in MIN_ROLE[route.name]:
                    ok = status == 405
                elif may_use(route, method, role):
                    ok = status == 404  # the objects are not of the project the URL names
                else:
                    ok = status in (403, 404)
                if not ok or sent.changed:
                    problems.append(f"{method} {url} ({variant}) as {who}: {status}; wrote {sent.changed or 'nothing'}")
    assert not problems, "\n".join(problems)


# A version drawn from two projects.

VERSION_ROUTES = [route for route in ROUTES if "version_id" in route.arguments]
API_VERSION_ROUTES = [route for route in ROUTES if route.drf_basename in ("version", "export")]


def joint_values(route: Route, world: World) -> dict[str, object]:
    values = values_for(route, world.p2)
    objects = {"version_id": world.joint_version.pk, "job_id": world.joint_job.pk}
    if route.drf_basename:
        objects["pk"] = world.joint_version.pk if route.drf_basename == "version" else world.joint_job.pk
    return {**values, **{name: value for name, value in objects.items() if name in values}}


def joint_version_problems(routes: list[Route], world: World, caller: Caller, user: AbstractBaseUser) -> list[str]:
    problems = []
    for route in routes:
        url = route.url(joint_values(route, world))
        for method in METHODS:
            for how, client in caller.clients(user, route):
                sent = caller.send(client, method, url)
                status = sent.response.status_code
                expected = 404 if method in MIN_ROLE[route.name] else 405
                if status != expected or sent.changed:
                    problems.append(
                        f"{method} {url} ({how}): {status}, expected {expected}; wrote {sent.changed or 'nothing'}"
                    )
    return problems


@pytest.mark.django_db
def test_a_joint_version_is_refused_on_the_web_to_an_annotator_of_one_of_its_projects(
    world: World, caller: Caller
) -> None:
    """Annotator in P1, curator in P2: the P1+P2 version (P1's consensus and gold answers) and its exports stay
    closed under /projects/<P2>/versions/..."""
    problems = joint_version_problems(VERSION_ROUTES, world, caller, world.cross)
    assert not problems, "\n".join(problems)


@pytest.mark.django_db
def test_a_joint_version_is_refused_by_the_api_to_an_annotator_of_one_of_its_projects(
    world: World, caller: Caller
) -> None:
    problems = joint_version_problems(API_VERSION_ROUTES, world, caller, world.cross)
    assert not problems, "\n".join(problems)


@pytest.mark.django_db
def test_a_joint_version_is_refused_to_a_curator_of_only_one_of_its_projects(world: World, caller: Caller) -> None:
    problems = joint_version_problems([*VERSION_ROUTES, *API_VERSION_ROUTES], world, caller, world.p2.members[C])
    assert not problems, "\n".join(problems)


@pytest.mark.django_db
def test_an_admin_of_every_project_of_a_joint_version_opens_it(world: World, caller: Caller) -> None:
    """The control of the three above: the joint version and its export are there to be refused."""
    for route in [r for r in [*VERSION_ROUTES, *API_VERSION_ROUTES] if "GET" in MIN_ROLE[r.name]]:
        url = route.url(joint_values(route, world))
        for how, client in caller.clients(world.both_admin, route):
            assert caller.send(client, "GET", url).response.status_code == 200, (url, how)


# Lists name no foreign objects.


@pytest.mark.django_db
def test_lists_show_nothing_of_a_project_the_user_may_not_see(world: World, caller: Caller) -> None:
    projects = reverse("annotate:project_list")
    versions = reverse("api:version-list")
    hidden_versions = {world.p1.version.pk, world.joint_version.pk}
    for user in (world.outsider, *world.p2.members.values()):
        listing = caller.send(csrf_client(user), "GET", projects).response
        assert listing.status_code == 200
        assert world.p1.project.name not in listing.content.decode(), user
    for user in (world.outsider, world.cross, world.p1.members[A], *world.p2.members.values()):
        answer = caller.send(token_client(world.tokens[user.pk]), "GET", versions).response.json()
        assert hidden_versions.isdisjoint(v["id"] for v in answer["results"]), user
    # P2's versions page, to a curator of P2 who only annotates in P1: not the P1+P2 version.
    page = caller.send(caller.session(world.cross), "GET", reverse("curation:version_list", args=[world.p2.project.pk]))
    assert page.response.status_code == 200
    assert reverse("curation:version_detail", args=[world.p2.project.pk, world.p2.version.pk]) in page.response.text
    assert (
        reverse("curation:version_detail", args=[world.p2.project.pk, world.joint_version.pk]) not in page.response.text
    )


# The Django admin: staff only, whatever the project role (every admin URL with an argument).

ADMIN_ARGUMENTS: dict[str, Callable[[Route, World], object]] = {
    "object_id": lambda route, world: _an_object_of(route, world),
    "content_type_id": lambda route, world: ContentType.objects.get_for_model(Project).pk,
    "id": lambda route, world: world.p1.members[AD].pk,
    "app_label": lambda route, world: "annotate",
    "url": lambda route, world: "annotate/no-such-page/",
}


def _an_object_of(route: Route, world: World) -> object:
    model: Any = route.model_admin.model if route.model_admin else Project
    return model.objects.order_by("pk").values_list("pk", flat=True).first() or world.p1.project.pk


ADMIN_ROUTES = [route for route in all_routes() if route.namespace == "admin" and route.arguments]


def test_every_admin_url_argument_is_known() -> None:
    unknown = {name for route in ADMIN_ROUTES for name in route.arguments} - ADMIN_ARGUMENTS.keys()
    assert not unknown, f"say in ADMIN_ARGUMENTS what these name: {sorted(unknown)}"


@pytest.mark.django_db
@pytest.mark.parametrize("route", ADMIN_ROUTES, ids=[r.test_id for r in ADMIN_ROUTES])
def test_the_django_admin_is_for_staff_only(route: Route, world: World, caller: Caller) -> None:
    url = route.url({name: ADMIN_ARGUMENTS[name](route, world) for name in route.arguments})
    login = reverse("admin:login")
    problems = []
    for who, user in {"anonymous": None, "admin of both projects": world.both_admin}.items():
        for method in METHODS:
            sent = caller.send(caller.session(user), method, url)
            response = sent.response
            # The admin's catch-all page answers 404 to everyone; the rest send a non-staff user to log in.
            refused = response.status_code == 404 or (
                response.status_code == 302 and response["Location"].startswith(login)
            )
            if not refused or sent.changed:
                problems.append(f"{method} {url} as {who}: {response.status_code}; wrote {sent.changed or 'nothing'}")
    assert not problems, "\n".join(problems)
