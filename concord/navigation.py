"""The project tabs in the top bar (templates/annotate/_project_nav.html), from the URL a page answers: the project
its URL names, the tabs the user's role in it opens, and which tab the page belongs to (aria-current).

A context processor, so that every project page has the tabs without its view passing anything (healthchecks'
hc/front/context_processors.py), and lazy: the role is looked up only when a template shows the tabs. A user who is
not a member of the URL's project gets no tabs at all, so a 404 page names nothing of a project they cannot see.
"""

from dataclasses import dataclass, field

from django.http import HttpRequest
from django.urls import reverse
from django.utils.functional import SimpleLazyObject

from annotate.access import role_in_project
from annotate.models import Project, Role


@dataclass(frozen=True)
class Tab:
    label: str
    url_name: str  # the tab's own page: aria-current="page" there
    min_role: str
    within: tuple[str, ...] = ()  # pages under the tab (an item of Items): aria-current="true" there


# In the order the top bar shows them.
TABS = (
    Tab("Items", "annotate:item_list", Role.CURATOR, ("annotate:item_detail",)),
    Tab("Review", "curation:review_queue", Role.CURATOR, ("curation:adjudicate",)),
    Tab("Annotators", "curation:annotator_quality", Role.CURATOR),
    Tab("Dashboard", "curation:dashboard", Role.CURATOR),
    Tab("Datasets", "curation:version_list", Role.CURATOR, ("curation:version_new", "curation:version_detail")),
    Tab(
        "Curation campaigns",
        "training:campaign_list",
        Role.CURATOR,
        ("training:campaign_detail", "training:decision_list"),
    ),
    Tab("Schema", "annotate:schema_edit", Role.ADMIN),
    Tab("Settings", "annotate:project_settings", Role.ADMIN),
    Tab("Members", "annotate:project_members", Role.ADMIN),
    Tab("Imports", "annotate:import_list", Role.ADMIN, ("annotate:import_detail",)),
    Tab("Training", "training:run_list", Role.ADMIN, ("training:run_detail",)),
    Tab("Selection", "training:selection", Role.ADMIN),
)
HOME = Tab("", "annotate:project_queue", Role.ANNOTATOR, ("annotate:label",))


@dataclass(frozen=True)
class Link:
    label: str
    url: str
    current: str  # the aria-current value: "page", "true" or "" (not current)


@dataclass(frozen=True)
class ProjectNav:
    home: Link  # the project's name, to its home page
    tabs: list[Link] = field(default_factory=list)


def _current(tab: Tab, view_name: str) -> str:
    if view_name == tab.url_name:
        return "page"
    return "true" if view_name in tab.within else ""


def project_nav_for(request: HttpRequest) -> ProjectNav | None:
    """The tabs of the project the request's URL names, as the user's role there opens them; None off a project's
    pages and for anyone who is not a member of it."""
    match = request.resolver_match
    project_id = match.kwargs.get("project_id") if match else None
    if match is None or not isinstance(project_id, int):
        return None
    project = Project.objects.filter(pk=project_id).only("name").first()
    role = role_in_project(request.user, project) if project else None
    if project is None or role is None:
        return None
    args = [project.pk]
    home = Link(project.name, reverse(HOME.url_name, args=args), _current(HOME, match.view_name))
    tabs = [
        Link(tab.label, reverse(tab.url_name, args=args), _current(tab, match.view_name))
        for tab in TABS
        if Role.rank(role) >= Role.rank(tab.min_role)
    ]
    return ProjectNav(home=home, tabs=tabs)


def project_nav(request: HttpRequest) -> dict[str, object]:
    """Context processor: `project_nav`, a ProjectNav or None (falsy), worked out when a template first reads it."""
    return {"project_nav": SimpleLazyObject(lambda: project_nav_for(request))}
