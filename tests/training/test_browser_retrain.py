"""Retraining end to end in a real browser: an admin trains on a frozen version with the default backbone (the
packaged MiniLM, on the CPU) on a real Celery worker, watches the run advance, promotes the model, scores the items
and finds, in the review queue, the items whose annotators the model contradicts.

The run page polls every 2 s, and a run of a few dozen steps may finish between two polls on a fast machine or
drag on a slow one. So that the page is seen mid-run whatever the speed, the worker is held after each of its
first progress writes until the browser has shown that step (ProgressGate); nothing waits on a clock.
"""

import queue
import re
import threading
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker  # type: ignore[import-untyped]
from playwright.sync_api import Page, expect

from annotate.models import Role
from concord import jobs
from concord.celery import app as celery_app
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.browser import log_in
from tests.jobs import private_queue
from tests.training.conftest import frozen_version
from tests.waits import HANG_GUARD_S
from training.ml.config import default_backbone
from training.models import ItemScore, TrainingRun
from training.services import runs as run_services

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Progress writes the worker waits on the browser for: each is a state the page must show mid-run.
HELD_WRITES = 2

# Snapshots of the run's live fragment, taken on every change of the page, in window.__seen.
WATCH_RUN = """() => {
  window.__seen = [];
  const snapshot = () => {
    const bar = document.querySelector('#run-live [role=progressbar]');
    const line = document.querySelector('#loss-curve polyline');
    const state = {
      status: document.querySelector('#run-status').textContent.trim(),
      step: Number(bar.getAttribute('aria-valuenow')),
      percent: parseInt(bar.querySelector('.bar').getAttribute('width'), 10),
      points: line ? line.getAttribute('points').trim().split(/\\s+/).length : 0,
    };
    const last = window.__seen[window.__seen.length - 1];
    if (JSON.stringify(last) !== JSON.stringify(state)) window.__seen.push(state);
  };
  snapshot();
  new MutationObserver(snapshot).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""


class ProgressGate:
    """Holds the worker after each of its first `holds` progress writes (training.services.runs._Reporter.flush)
    until the test has seen that step in the browser."""

    def __init__(self, holds: int) -> None:
        self.holds = holds
        self.written: queue.Queue[int] = queue.Queue()
        self.shown = threading.Event()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        flush = run_services._Reporter.flush

        def gated(reporter: Any) -> None:
            step = (reporter.pending or {}).get("step")
            flush(reporter)
            if step is not None and self.holds > 0:
                self.holds -= 1
                self.shown.clear()
                self.written.put(step)
                self.shown.wait(timeout=HANG_GUARD_S)

        monkeypatch.setattr(run_services._Reporter, "flush", gated)

    def next_write(self, run: TrainingRun) -> int:
        """The step of the worker's next held write; fails at once if the run ends before one."""
        for _ in range(HANG_GUARD_S):  # a second at a time
            try:
                return self.written.get(timeout=1)
            except queue.Empty:
                run.refresh_from_db()
                assert not run.finished, f"the run ended before a held progress write: {run.status} {run.error}"
        raise AssertionError("the worker wrote no progress mid-run")

    def release(self) -> None:
        self.shown.set()

    def open(self) -> None:
        """Hold nothing more (a failing test must not leave the worker waiting)."""
        self.holds = 0
        self.shown.set()


def items_the_annotators_get_wrong(project, count: int):  # type: ignore[no-untyped-def]
    """Like labelled_items', but both annotators prefer "no." to the helpful answer: a model that learned the
    pattern confidently contradicts them. Added after the version is frozen, so it never trains on them."""
    items = []
    for n in range(100, 100 + count):
        good = f"yes, the answer is {n} because it is good."
        a, b = (good, "no.") if n % 2 == 0 else ("no.", good)
        item = ItemFactory(
            project=project,
            prompt=[{"role": "user", "content": f"what is the number {n}?"}],
            response_a=a,
            response_b=b,
        )
        towards_no = 1 if n % 2 == 0 else -1
        AnnotationFactory(item=item, strength=2 * towards_no)
        AnnotationFactory(item=item, strength=3 * towards_no)
        items.append(item)
    return items


@pytest.mark.usefixtures("worker_closes_connections")
def test_an_admin_retrains_promotes_scores_and_reviews_the_model_s_disagreements(  # type: ignore[no-untyped-def]
    live_server, page: Page, monkeypatch, settings, tmp_path
) -> None:
    settings.TRAINING_ROOT = tmp_path / "training"
    project = ProjectFactory.create()
    version = frozen_version(project, count=40)
    contradicted = items_the_annotators_get_wrong(project, count=2)
    admin = member(project, Role.ADMIN)
    worker_queue = private_queue(monkeypatch, jobs.TRAINING_RUN, jobs.SCORING, jobs.SCORING_CHUNK)
    gate = ProgressGate(holds=HELD_WRITES)
    gate.install(monkeypatch)

    log_in(page, live_server.url, admin)
    page.get_by_role("link", name=project.name, exact=True).click()
    page.get_by_role("link", name="Training", exact=True).click()
    with start_worker(celery_app, perform_ping_check=False, queues=[worker_queue], shutdown_timeout=HANG_GUARD_S):
        try:
            run = retrain(page, version)
            watch_the_run_advance(page, run, gate)
        finally:
            gate.open()
        see_the_run_finish(page, run)
        promote_and_score(page, project)
    see_the_model_s_disagreements(page, contradicted)


def retrain(page: Page, version) -> TrainingRun:  # type: ignore[no-untyped-def]
    form = page.locator("#retrain")
    form.get_by_label("Dataset version").select_option(label=str(version))  # "rm data (frozen)"
    expect(form.get_by_label("Backbone")).to_have_value(default_backbone())  # kept as the form offers it
    form.get_by_label("Epochs").fill("2")
    form.get_by_label("Batch size").fill("2")
    form.get_by_label("Learning rate").fill("1e-4")
    form.get_by_label("Max length").fill("32")
    form.get_by_role("button", name="Start training").click()
    expect(page.get_by_role("heading", name=re.compile(r"^Training run #\d+$"))).to_be_visible()
    run = TrainingRun.objects.get()
    assert run.config["backbone"] == default_backbone()
    assert (run.config["epochs"], run.config["batch_size"], run.config["max_length"]) == (2, 2, 32)
    return run


def watch_the_run_advance(page: Page, run: TrainingRun, gate: ProgressGate) -> None:
    page.evaluate(WATCH_RUN)
    bar = page.locator("#run-live [role=progressbar]")
    held = []
    for _ in range(HELD_WRITES):
        step = gate.next_write(run)
        expect(bar).to_have_attribute("aria-valuenow", str(step))
        expect(page.locator("#loss-curve polyline")).to_be_attached()
        held.append(step)
        gate.release()
    run.refresh_from_db()
    assert 0 < held[0] < held[-1] < run.total_steps, (held, run.total_steps)


def see_the_run_finish(page: Page, run: TrainingRun) -> None:
    status = page.locator("#run-status")
    expect(status).to_have_text(re.compile("^(Succeeded|Failed|Cancelled)$"))
    run.refresh_from_db()
    assert status.text_content() == "Succeeded", (run.error, run.log)
    heldout = run.metrics["heldout"]["accuracy"]
    expect(page.locator("#heldout-accuracy")).to_have_text(f"{heldout:.4f}")
    assert heldout == 1.0, run.metrics  # "yes, ... good." over "no." is all there is to learn
    expect(page.locator("#accuracy-curve polyline")).to_be_attached()
    seen = page.evaluate("window.__seen")
    mid_run = [s for s in seen if s["status"] == "Running" and 0 < s["step"] < run.total_steps]
    # Progress, its bar and the loss curve's points all grew from one state the page showed to the next.
    for key in ("step", "percent", "points"):
        values = [s[key] for s in mid_run]
        assert values == sorted(values), (key, seen)
        assert len(set(values)) >= 2, (key, seen)
    assert seen[-1]["status"] == "Succeeded"
    assert (seen[-1]["step"], seen[-1]["percent"]) == (run.total_steps, 100)
    assert seen[-1]["points"] > mid_run[-1]["points"]


def promote_and_score(page: Page, project) -> None:  # type: ignore[no-untyped-def]
    # A few held-out pairs measure next to nothing: the page says so, and promoting takes the admin's word for it.
    expect(page.get_by_test_id("promotion-warning")).to_contain_text(re.compile(r"measured on \d+ pairs?, fewer than"))
    page.get_by_label("I understand; promote it anyway").check()
    page.get_by_role("button", name="Promote to the active reward model").click()
    expect(page.locator(".messages")).to_contain_text("is now the active reward model")
    page.get_by_role("link", name="All runs").click()
    page.get_by_role("button", name="Score with the active model").click()
    scoring = page.locator("#scoring")
    badge = scoring.locator(".badge")
    expect(badge).to_have_text(re.compile("^(Done|Failed)$"))
    assert badge.text_content() == "Done", scoring.text_content()
    items = project.items.count()
    expect(scoring).to_contain_text(f"{items} / {items} items")
    assert ItemScore.objects.filter(reward_model__is_active=True).count() == items


def see_the_model_s_disagreements(page: Page, contradicted) -> None:  # type: ignore[no-untyped-def]
    page.get_by_role("link", name="Review", exact=True).click()
    page.get_by_label("Reason").select_option(label="Model disagrees")
    page.get_by_role("button", name="Filter").click()
    rows = page.locator("[data-testid=review-queue] tbody tr[data-item-id]")
    # The two items whose annotators chose "no."; none of the 40 they labelled the way the model learned.
    expect(rows).to_have_count(len(contradicted))
    assert {int(row.get_attribute("data-item-id") or 0) for row in rows.all()} == {item.pk for item in contradicted}
    for row in rows.all():
        expect(row.locator(".reason-model")).to_have_text("Model disagrees")
        expect(row).to_contain_text(re.compile(r"model prefers [AB] with p = \d\.\d\d"))
        expect(row.get_by_test_id("model-score")).to_contain_text("P(B)")
