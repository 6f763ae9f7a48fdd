"""Selective annotation in a real browser: an admin switches the project's queue to a strategy on the selection
page, a real Celery worker ranks the unlabelled pool with the active reward model while the page follows it, and
an annotator's next item is the strategy's first pick."""

import pytest
from celery.contrib.testing.worker import start_worker  # type: ignore[import-untyped]
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from annotate.models import Item, Role
from concord import jobs
from concord.celery import app as celery_app
from tests.annotate.factories import ItemFactory, member
from tests.browser import fresh_page, log_in
from tests.jobs import private_queue
from tests.training.test_scoring import project_with_active_model
from tests.waits import HANG_GUARD_S
from training.models import SelectionRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.mark.usefixtures("worker_closes_connections")
def test_an_admin_switches_the_queue_to_a_strategy_and_annotators_get_its_picks_first(  # type: ignore[no-untyped-def]
    live_server, page: Page, browser: Browser, monkeypatch, trained_model_dir
):
    project, _, later, _ = project_with_active_model(trained_model_dir)
    pool = later + [ItemFactory(project=project, response_a=f"maybe, answer {n}.") for n in range(5)]
    log_in(page, live_server.url, member(project, Role.ADMIN))
    page.goto(live_server.url + reverse("annotate:project_queue", args=[project.pk]))
    expect(page.get_by_test_id("selection-strategy")).to_contain_text("queue order")
    page.get_by_role("link", name="Selection", exact=True).click()
    page.get_by_label("Strategy").select_option(label="Margin uncertainty")
    page.get_by_label("Batch size").fill("3")
    page.get_by_label("Random share").fill("0")
    queue = private_queue(monkeypatch, jobs.SELECTION)
    with start_worker(celery_app, perform_ping_check=False, queues=[queue], shutdown_timeout=HANG_GUARD_S):
        page.get_by_role("button", name="Save").click()
        expect(page.locator(".messages")).to_contain_text("Strategy set to Margin uncertainty")
        # The page follows the job by polling, and shows when the priorities were computed.
        expect(page.get_by_test_id("last-computed")).to_contain_text("Priorities last computed")
    run = SelectionRun.objects.get()
    assert (run.status, run.picked, run.pool) == ("done", 3, len(pool)), run.error
    expect(page.locator("#active-strategy")).to_have_text("Margin uncertainty")
    expect(page.locator("#waiting-count")).to_have_text("3")
    first_pick = Item.objects.filter(project=project).order_by("-selection_rank").first()
    assert first_pick is not None
    assert first_pick.selection_rank == 3

    with fresh_page(browser) as annotator_page:
        log_in(annotator_page, live_server.url, member(project))
        annotator_page.goto(live_server.url + reverse("annotate:label", args=[project.pk]))
        annotator_page.get_by_role("button", name="Take the next item").click()
        card = annotator_page.locator("#item-card [data-item-id]")
        expect(card).to_have_attribute("data-item-id", str(first_pick.pk))
