"""What every page shares, in a browser at a desk's width and a phone's (issue 14, items 8 and 9): the project tabs
reachable at both (a row at the desk, a "Project menu" that opens without JavaScript on the phone), nothing that
scrolls sideways, a skip link, the error pages, and a login that keeps the username after a wrong password."""

from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect
from pytest_django.live_server_helper import LiveServer

from annotate.models import Role
from concord.navigation import TABS
from tests.annotate.factories import DEFAULT_PASSWORD, ItemFactory, ProjectFactory, UserFactory, member
from tests.screens import WIDTHS, assert_no_sideways_scroll, at_both_widths, page_at, screenshot_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

TAB_LABELS = [tab.label for tab in TABS]


def on_phone(page: Page) -> bool:
    return page.viewport_size is not None and page.viewport_size["width"] == WIDTHS["phone"]


def check_every_tab_reachable(page: Page, current: str | None) -> None:
    """Every tab is a visible link inside the viewport (after opening the menu on a phone); `current` is marked."""
    nav = page.get_by_role("navigation", name="Project")
    if on_phone(page):
        expect(nav.get_by_role("link", name="Items")).to_be_hidden()  # folded away until asked for
        page.get_by_text("Project menu").click()
    width = page.viewport_size["width"] if page.viewport_size else 0
    for label in TAB_LABELS:
        link = nav.get_by_role("link", name=label, exact=True)
        expect(link).to_be_visible()
        box = link.bounding_box()
        assert box is not None
        assert 0 <= box["x"] <= box["x"] + box["width"] <= width, f"{label} is off screen"
    if current:
        expect(nav.get_by_role("link", name=current, exact=True)).to_have_attribute("aria-current", "page")
    expect(nav.locator('a[aria-current="page"]')).to_have_count(1 if current else 0)


def check_skip_link(page: Page) -> None:
    """The first Tab lands on the skip link, which shows itself, and Enter moves to the page's content."""
    page.keyboard.press("Tab")
    skip = page.get_by_role("link", name="Skip to content")
    expect(skip).to_be_focused()
    box = skip.bounding_box()
    assert box is not None
    assert box["y"] >= 0
    page.keyboard.press("Enter")
    expect(page.locator("main#content")).to_be_focused()


def test_project_pages_keep_every_tab_within_reach_at_both_widths(
    browser: Browser, live_server: LiveServer, tmp_path: Path
) -> None:
    project = ProjectFactory(name="Everyday questions")
    ItemFactory.create_batch(3, project=project)
    admin = member(project, Role.ADMIN)
    folder = screenshot_dir(tmp_path)

    def home(page: Page) -> None:
        expect(page.get_by_role("link", name="Everyday questions")).to_have_attribute("aria-current", "page")
        check_skip_link(page)
        check_every_tab_reachable(page, None)

    home_url = reverse("annotate:project_queue", args=[project.pk])
    at_both_widths(browser, live_server.url, admin, home_url, home, name="everywhere-project-home", folder=folder)
    review_url = reverse("curation:review_queue", args=[project.pk])
    at_both_widths(
        browser,
        live_server.url,
        admin,
        review_url,
        lambda page: check_every_tab_reachable(page, "Review"),
        name="everywhere-review-queue",
        folder=folder,
    )


def test_error_pages_say_why_and_lead_back_at_both_widths(browser: Browser, live_server, tmp_path: Path) -> None:
    project = ProjectFactory(name="Everyday questions")
    annotator = member(project, Role.ANNOTATOR)
    folder = screenshot_dir(tmp_path)

    def forbidden(page: Page) -> None:
        expect(page.get_by_test_id("error-403")).to_contain_text("This needs the curator role in Everyday questions.")
        expect(page.get_by_role("link", name="Back to your projects")).to_be_visible()

    def missing(page: Page) -> None:
        expect(page.get_by_test_id("error-404")).to_contain_text("No page has this address.")
        page.get_by_role("link", name="Back to your projects").click()
        expect(page.get_by_role("heading", name="Your projects")).to_be_visible()
        page.go_back()

    forbidden_url = reverse("curation:review_queue", args=[project.pk])
    at_both_widths(browser, live_server.url, annotator, forbidden_url, forbidden, name="everywhere-403", folder=folder)
    at_both_widths(browser, live_server.url, annotator, "/no/such/page/", missing, name="everywhere-404", folder=folder)


def test_a_wrong_password_keeps_the_username_at_both_widths(browser: Browser, live_server, tmp_path: Path) -> None:
    UserFactory(username="ada.lovelace")
    folder = screenshot_dir(tmp_path)
    for width in WIDTHS:
        with page_at(browser, width) as page:
            page.goto(live_server.url + reverse("login"))
            page.get_by_label("Username").fill("ada.lovelace")
            page.get_by_label("Password").fill("not-" + DEFAULT_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_test_id("login-error")).to_contain_text("Wrong username or password")
            expect(page.get_by_label("Username")).to_have_value("ada.lovelace")
            expect(page.get_by_label("Password")).to_be_focused()
            assert_no_sideways_scroll(page, f"the login page ({width})")
            page.screenshot(path=str(folder / f"everywhere-login-{width}.png"), full_page=True)
            page.get_by_label("Password").fill(DEFAULT_PASSWORD)
            page.get_by_role("button", name="Log in").click()
            expect(page.get_by_role("heading", name="Your projects")).to_be_visible()
