"""The import pages in a browser at a desk's width and a phone's (issue 14, item 6): the upload form that detects the
format by default and names the likely formats of a file none fits; a finished import's links to its items and to
labeling; a project home whose imported labels already fill the overlap."""

import json
from pathlib import Path

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from annotate.models import Role
from tests.annotate.factories import ProjectFactory, member
from tests.annotate.layouts import pandalm_record, run_import, write_json
from tests.screens import at_both_widths, screenshot_dir

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def media(settings, tmp_path):  # type: ignore[no-untyped-def]
    settings.MEDIA_ROOT = tmp_path / "media"


def test_the_upload_form_names_the_likely_formats_of_a_file_none_fits_at_both_widths(
    browser: Browser, live_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(name="Writing assistant comparisons")
    run_import(project, write_json(tmp_path / "testset-v1.json", [pandalm_record(n) for n in range(3)]), "pandalm")
    admin = member(project, Role.ADMIN)
    odd = json.dumps([{"instruction": "Shorten this.", "response1": "Short.", "response2": "Shorter."}]).encode()

    def check(page: Page) -> None:
        expect(page.get_by_label("Format")).to_have_value("auto")
        expect(page.get_by_role("link", name="testset-v1.json")).to_be_visible()
        page.get_by_label("File").set_input_files(
            {"name": "pandalm-like.json", "mimeType": "application/json", "buffer": odd}
        )
        page.get_by_role("button", name="Import").click()
        expect(page.get_by_text("this looks like a JSON array: PandaLM?")).to_be_visible()

    url = reverse("annotate:import_list", args=[project.pk])
    at_both_widths(browser, live_server.url, admin, url, check, name="imports", folder=screenshot_dir(tmp_path))


def test_a_finished_import_links_to_its_items_and_labeling_at_both_widths(
    browser: Browser, live_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(name="Writing assistant comparisons", overlap=5)
    batch = run_import(
        project, write_json(tmp_path / "testset-v1.json", [pandalm_record(n) for n in range(3)]), "pandalm"
    )
    admin = member(project, Role.ADMIN)

    def check(page: Page) -> None:
        expect(page.get_by_text("Done", exact=True)).to_be_visible()
        expect(page.get_by_test_id("import-format")).to_contain_text("PandaLM")
        items = page.get_by_role("link", name="See its 3 items")
        expect(items).to_have_attribute("href", reverse("annotate:item_list", args=[project.pk]) + f"?batch={batch.pk}")
        expect(page.get_by_role("link", name="Start labeling")).to_be_visible()

    url = reverse("annotate:import_detail", args=[project.pk, batch.pk])
    at_both_widths(browser, live_server.url, admin, url, check, name="import-done", folder=screenshot_dir(tmp_path))


def test_a_project_filled_by_imported_labels_says_so_at_home_at_both_widths(
    browser: Browser, live_server, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(name="PandaLM test set", overlap=3)
    run_import(project, write_json(tmp_path / "testset-v1.json", [pandalm_record(n) for n in range(3)]), "pandalm")
    curator = member(project, Role.CURATOR)

    def check(page: Page) -> None:
        filled = page.get_by_test_id("filled-by-imports")
        expect(filled).to_contain_text(
            "Every item already has the 3 labels this project wants, from its import: nothing is left to label."
        )
        expect(filled.get_by_role("link", name="See how they agree")).to_be_visible()
        expect(page.get_by_text("Nothing left for you")).to_have_count(0)

    url = reverse("annotate:project_queue", args=[project.pk])
    at_both_widths(
        browser, live_server.url, curator, url, check, name="project-filled-by-imports", folder=screenshot_dir(tmp_path)
    )
