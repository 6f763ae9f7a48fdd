"""The datasets pages at a desk and a phone width (issue 14, item 5): the build form with its row count, and a
frozen version's tables and strength histogram; nothing scrolls sideways."""

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from annotate.models import Role
from tests.annotate.factories import ProjectFactory, member
from tests.curation.test_version_page import frozen
from tests.screens import at_both_widths, screenshot_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_the_build_form_and_a_frozen_version_at_both_widths(live_server, browser: Browser, tmp_path) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(name="Helpfulness")
    version = frozen(project)
    curator = member(project, Role.CURATOR)
    folder = screenshot_dir(tmp_path)

    def build_form(page: Page) -> None:
        expect(page.get_by_role("heading", name="Build a dataset version")).to_be_visible()
        expect(page.get_by_test_id("row-total")).to_have_text(str(version.row_count))
        expect(page.get_by_test_id("row-count-table")).to_be_visible()

    def version_page(page: Page) -> None:
        expect(page.get_by_role("heading", name=version.name)).to_be_visible()
        expect(page.locator("#strength-histogram")).to_be_visible()
        expect(page.get_by_test_id("rows")).to_be_attached()

    new_url = reverse("curation:version_new", args=[project.pk])
    at_both_widths(browser, live_server.url, curator, new_url, build_form, name="datasets-build", folder=folder)
    detail_url = reverse("curation:version_detail", args=[project.pk, version.pk])
    at_both_widths(browser, live_server.url, curator, detail_url, version_page, name="datasets-version", folder=folder)
