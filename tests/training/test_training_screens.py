"""The training pages at a desk and a phone width (issue 14): the runs page with its held-out chart (n and standard
error), the objectives in words, and a run's page with its phase, its curves on labelled axes (a single point
shown) and its final metrics as tables; nothing scrolls sideways."""

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Page, expect

from annotate.models import Role
from tests.annotate.factories import ProjectFactory, member
from tests.screens import at_both_widths, screenshot_dir
from tests.training.conftest import frozen_version
from tests.training.test_run_pages import METRICS
from tests.training.test_runs import make_model, make_run
from training.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def world():  # type: ignore[no-untyped-def]
    project = ProjectFactory(name="Helpfulness")
    version = frozen_version(project, count=4)
    history = [{"step": s, "loss": 0.7 - s / 100, "eval_accuracy": 0.5 + s / 100} for s in (10, 20, 30)]
    finished = make_run(
        project, version, status=TrainingRun.Status.SUCCEEDED, step=30, total_steps=30, metrics=METRICS, history=history
    )
    config = {**finished.config, "objective": "bt_margin"}
    TrainingRun.objects.filter(pk=finished.pk).update(config=config, epoch=1.0)
    make_model(finished, model_card={"config": config, "metrics": METRICS})
    earlier = make_run(project, version, status=TrainingRun.Status.SUCCEEDED)
    make_model(
        earlier,
        model_card={"config": {"objective": "bt"}, "metrics": {"heldout": {"accuracy": 0.62}, "heldout_pairs": 40}},
    )
    starting = make_run(
        project,
        version,
        status=TrainingRun.Status.RUNNING,
        phase="tokenising 900 pairs",
        history=[{"step": 1, "loss": 0.69, "eval_accuracy": None}],
    )
    return project, finished, starting, member(project, Role.ADMIN)


def test_the_runs_page_at_both_widths(live_server, browser: Browser, tmp_path) -> None:  # type: ignore[no-untyped-def]
    project, finished, starting, admin = world()

    def check(page: Page) -> None:
        expect(page.get_by_role("heading", name="Held-out accuracy")).to_be_visible()
        chart = page.locator("#heldout-chart")
        expect(chart).to_be_visible()
        expect(chart.locator(".whisker")).to_have_count(2)
        expect(chart).to_contain_text("0.800 ± 0.040 · n=100")
        expect(chart).to_contain_text("0.620 ± 0.077 · n=40")
        models = page.get_by_test_id("models")
        expect(models.locator(f"#model-{finished.reward_model.pk}")).to_contain_text("Bradley-Terry with a margin")
        expect(page.locator(f"#run-{starting.pk}")).to_contain_text("tokenising 900 pairs")
        expect(page.locator("#retrain")).to_contain_text("Bradley-Terry with soft labels: ")
        expect(page.locator("#retrain select[name=backbone] option").first).to_have_text(
            "all-MiniLM-L6-v2 (the packaged default)"
        )

    url = reverse("training:run_list", args=[project.pk])
    at_both_widths(browser, live_server.url, admin, url, check, name="training-runs", folder=screenshot_dir(tmp_path))


def test_a_run_page_at_both_widths(live_server, browser: Browser, tmp_path) -> None:  # type: ignore[no-untyped-def]
    project, finished, starting, admin = world()

    def check_finished(page: Page) -> None:
        expect(page.locator("#loss-curve .curve-dot")).to_have_count(3)
        expect(page.locator("#loss-curve .axis-name")).to_have_text(["step", "loss"])
        expect(page.locator("#heldout-accuracy")).to_have_text("0.8000")
        for part in ("overall", "calibration", "by-source", "by-strength", "attributes", "ensemble"):
            expect(page.get_by_test_id(f"metrics-{part}")).to_be_visible()
        expect(page.get_by_test_id("metrics-by-strength")).to_contain_text("strong (3 of 3)")

    def check_starting(page: Page) -> None:
        expect(page.locator("#run-phase")).to_have_text("Now: tokenising 900 pairs…")
        expect(page.locator("#loss-curve .curve-dot")).to_have_count(1)  # a single point, shown
        expect(page.locator("#accuracy-curve")).to_have_count(0)

    folder = screenshot_dir(tmp_path)
    finished_url = reverse("training:run_detail", args=[project.pk, finished.pk])
    at_both_widths(browser, live_server.url, admin, finished_url, check_finished, name="training-run", folder=folder)
    starting_url = reverse("training:run_detail", args=[project.pk, starting.pk])
    at_both_widths(
        browser, live_server.url, admin, starting_url, check_starting, name="training-run-starting", folder=folder
    )
