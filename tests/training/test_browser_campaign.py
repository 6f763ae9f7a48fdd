"""A human-AI synergy curation campaign end to end in a real browser: an admin starts it from the project's
Campaigns page and watches its round advance live (htmx polling) on a real Celery worker, a curator overrides one
of the round's decisions with a reason, an annotator is handed the routed pairs before any other and labels them,
and the round then freezes its version and the campaign finishes, all of it on the campaign page.

The page polls every 2 s, and the worker may pass a stage between two polls. So that the page is seen in each
stage whatever the speed, the worker is held at the start of the round's training run and of its scoring job
until the browser has shown the round waiting for that job (StageGate); nothing waits on a clock.
"""

import queue
import re
import threading
from typing import Any

import pytest
from celery.contrib.testing.worker import start_worker  # type: ignore[import-untyped]
from django.urls import reverse
from playwright.sync_api import Browser, Locator, Page, expect

from annotate.models import Annotation, Item, Role
from concord import jobs
from concord.celery import app as celery_app
from curation.models import DatasetRow
from curation.services.version_rows import prompt_hash, split_for
from tests.annotate.factories import member
from tests.browser import fresh_page, log_in
from tests.jobs import private_queue
from tests.training.test_campaigns import campaign_project, tiny_campaign
from tests.waits import HANG_GUARD_S
from training import tasks
from training.ml.synergy import CampaignSettings
from training.models import Campaign, CampaignRound, DecisionOverride, PairDecision
from training.selectors_campaigns import round_totals
from training.services.campaigns import campaign_rounds_check, gold_splits

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The start form's fields (their labels) and what the admin types in each; the rest keep the form's defaults.
START_FORM = {
    "Ensemble size": "2",
    "Epochs": "10",
    "Batch size": "4",
    "Max length": "32",
    "Learning rate": "0.003",
    "Accept threshold": "0.6",
    "Contradict threshold": "0.6",
    "AI label threshold": "0.6",
    "Budget per round": "4",
    "Retrieval k": "2",
    "Max rounds": "1",
    "Gold holdout": "0.3",
}
REASON = "B only says no: the longer answer is the helpful one"


class StageGate:
    """Holds the worker at the start of the round's training run and of its scoring job (training.tasks calls
    each job's service) until the test has seen the round waiting for that job in the browser."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.arrived: queue.Queue[str] = queue.Queue()
        self.shown = threading.Event()
        self.opened = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        execute, score = tasks.training_run_execute, tasks.scoring_chunk_run

        def gated_execute(*, run: Any) -> Any:
            self._hold("train")
            return execute(run=run)

        def gated_score(*, chunk: Any) -> Any:
            self._hold("score")  # its first chunk
            return score(chunk=chunk)

        monkeypatch.setattr(tasks, "training_run_execute", gated_execute)
        monkeypatch.setattr(tasks, "scoring_chunk_run", gated_score)

    def _hold(self, stage: str) -> None:
        if self.opened or stage in self.held:  # a job delivered again is not held twice
            return
        self.held.add(stage)
        self.shown.clear()
        self.arrived.put(stage)
        self.shown.wait(timeout=HANG_GUARD_S)

    def next_hold(self, campaign: Campaign) -> str:
        """The stage whose job the worker holds next; fails at once if the round fails before one."""
        for _ in range(HANG_GUARD_S):  # a second at a time
            try:
                return self.arrived.get(timeout=1)
            except queue.Empty:
                round_ = CampaignRound.objects.filter(campaign=campaign, number=1).first()
                assert round_ is None or round_.status != CampaignRound.Status.FAILED, round_.error
        raise AssertionError("the worker started no job of the round")

    def release(self) -> None:
        self.shown.set()

    def open(self) -> None:
        """Hold nothing more (a failing test must not leave the worker waiting)."""
        self.opened = True
        self.shown.set()


@pytest.mark.usefixtures("worker_closes_connections")
def test_a_campaign_runs_live_in_the_browser_annotators_get_its_routed_pairs_first_and_it_freezes(  # type: ignore[no-untyped-def]
    live_server, browser: Browser, monkeypatch, settings, tmp_path, tiny_backbone
) -> None:
    settings.TRAINING_ROOT = tmp_path / "training"
    settings.CONCORD_EMBEDDING_MODEL = str(tiny_backbone)
    project, _ = campaign_project()
    admin = member(project, Role.ADMIN, username="ada")
    curator = member(project, Role.CURATOR, username="carol")
    annotator = member(project, Role.ANNOTATOR, username="ann")
    worker_queue = private_queue(monkeypatch, jobs.TRAINING_RUN, jobs.SCORING, jobs.SCORING_CHUNK, jobs.CAMPAIGN_ROUND)
    gate = StageGate()
    gate.install(monkeypatch)

    with (
        fresh_page(browser) as page,
        start_worker(celery_app, perform_ping_check=False, queues=[worker_queue], shutdown_timeout=HANG_GUARD_S),
    ):
        log_in(page, live_server.url, admin)
        page.get_by_role("link", name=project.name, exact=True).click()
        page.get_by_role("link", name="Curation campaigns", exact=True).click()
        try:
            campaign = start_campaign(page, str(tiny_backbone))
            round_ = watch_the_round_reach_the_annotators(page, campaign, gate)
        finally:
            gate.open()
        with fresh_page(browser) as curator_page:
            overridden = override_a_decision(curator_page, live_server.url, curator, round_)
        with fresh_page(browser) as annotator_page:
            label_the_routed_pairs(annotator_page, live_server.url, annotator, round_)
        # Every routed pair is labelled: the page counts them while the round still waits to be woken.
        row = page.locator("#round-1")
        expect(row.get_by_test_id("round-labels")).to_have_text(
            f"{round_.routed} of {round_.routed} routed pairs labelled"
        )
        assert campaign_rounds_check() == [round_.pk]  # the watchdog's minute, without the minute
        see_the_round_freeze_and_the_campaign_finish(page, campaign)
    check_the_frozen_version(round_, overridden)


def start_campaign(page: Page, backbone: str) -> Campaign:
    expect(page.get_by_role("heading", name=re.compile("^Curation campaigns of "))).to_be_visible()
    form = page.locator("#campaign-start")
    field(form, "Name").fill("toy pass")
    field(form, "Backbone").fill(backbone)
    for label, value in START_FORM.items():
        field(form, label).fill(value)
    form.get_by_role("button", name="Start the campaign").click()
    expect(page.get_by_role("heading", name="Campaign toy pass")).to_be_visible()
    expect(page.locator(".messages")).to_contain_text("Campaign toy pass started")
    campaign = Campaign.objects.get()
    expected = CampaignSettings(**tiny_campaign(backbone, max_rounds=1)).to_dict()
    assert campaign.config == expected
    expect(page.locator("td[data-setting=retrieval_k]")).to_have_text("2")
    # Survives only if every later state of the page arrives by htmx swap rather than a page load.
    page.evaluate("window.__marker = 1")
    expect(page.locator("#campaign-status")).to_have_text("Running")
    expect(page.locator("#round-1")).to_be_visible()
    return campaign


def field(form: Locator, label: str) -> Locator:
    """The form's field labelled exactly so (Django's labels end in a colon)."""
    return form.get_by_label(re.compile(rf"^{re.escape(label)}:?$"))


def stage_cell(page: Page) -> Locator:
    return page.locator("#round-1 td").nth(1)


def watch_the_round_reach_the_annotators(page: Page, campaign: Campaign, gate: StageGate) -> CampaignRound:
    row = page.locator("#round-1")
    message = row.get_by_test_id("round-message")
    # Training: the worker froze the gold seed, queued the ensemble's run and holds it until the page shows so.
    assert gate.next_hold(campaign) == "train"
    round_ = CampaignRound.objects.get(campaign=campaign, number=1)
    assert round_.training_version is not None
    expect(stage_cell(page)).to_contain_text("Training the ensemble Waiting")
    expect(message).to_have_text(
        f"Training an ensemble of 2 on {round_.training_version.row_count} pairs (run {round_.training_run_id})"
    )
    expect(row.get_by_role("link", name=f"run #{round_.training_run_id}")).to_be_visible()
    expect(page.locator("#accuracy-plot")).to_have_count(0)  # nothing measured yet
    gate.release()
    # Scoring: the run succeeded, the round measured its ensemble on held-out gold and queued the scoring job.
    assert gate.next_hold(campaign) == "score"
    round_ = CampaignRound.objects.select_related("scoring_job").get(pk=round_.pk)
    assert round_.scoring_job is not None
    pairs = round_.scoring_job.total
    assert pairs == Item.objects.filter(project=campaign.project).count()  # every pair of the project
    expect(stage_cell(page)).to_contain_text("Scoring the pool Waiting")
    expect(message).to_have_text(f"Scoring {pairs} pairs (scoring job {round_.scoring_job_id})")
    progress = row.get_by_role("progressbar", name="Round 1 progress")
    expect(progress).to_have_attribute("aria-valuemax", str(pairs))
    expect(progress).to_have_attribute("aria-valuenow", "0")
    expect(row.get_by_test_id("round-accuracy")).to_contain_text(f"on {round_.gold_pairs} gold pairs")
    expect(page.locator("#accuracy-plot circle")).to_have_count(1)
    gate.release()
    # Deciding, routing, and now the humans.
    expect(stage_cell(page)).to_contain_text("Humans labelling routed pairs Waiting")
    round_.refresh_from_db()
    assert 0 < round_.routed <= 4, round_.routed
    expect(message).to_have_text(f"Waiting for the annotators: 0 of {round_.routed} routed pairs labelled")
    expect(row.get_by_test_id("round-labels")).to_have_text(f"0 of {round_.routed} routed pairs labelled")
    expect(progress).to_have_attribute("aria-valuemax", str(round_.routed))
    expect(progress).to_have_attribute("aria-valuenow", "0")
    expect(row.get_by_role("button", name="Close round now")).to_be_visible()
    expect_counts(row, round_)
    expect(page.locator("#strength-histogram rect").first).to_be_attached()
    assert page.evaluate("window.__marker") == 1
    return round_


def expect_counts(row: Locator, round_: CampaignRound) -> None:
    """The round's decisions per pool as the rounds table shows them, against what the round wrote."""
    assert round_.counts, round_.counts
    for pool, per_pool in round_.counts.items():
        for decision, count in per_pool.items():
            expect(row.locator(f'[data-decision="{pool}:{decision}"]')).to_have_text(f"{decision} {count}")
    shown = row.locator("[data-decision]")
    expect(shown).to_have_count(sum(len(per_pool) for per_pool in round_.counts.values()))


def override_a_decision(page: Page, base_url: str, curator, round_: CampaignRound) -> PairDecision:  # type: ignore[no-untyped-def]
    """A curator flips an accepted silver pair (one whose prompt trains, so the frozen version shows it), with a
    reason; the list then files it under flip, with who and why."""
    campaign = round_.campaign
    settings = CampaignSettings.from_dict(campaign.config)
    fractions = gold_splits(settings)
    accepted = [
        d
        for d in PairDecision.objects.filter(round=round_, decision="accept").select_related("item").order_by("pk")
        if split_for(prompt_hash(d.item.prompt), seed=settings.seed, fractions=fractions) == "train"
    ]
    assert accepted, round_.counts
    chosen = accepted[0]

    log_in(page, base_url, curator)
    page.get_by_role("link", name=campaign.project.name, exact=True).click()
    page.get_by_role("link", name="Curation campaigns", exact=True).click()
    page.get_by_role("link", name=campaign.name, exact=True).click()
    page.locator("#round-1").get_by_role("link", name="Decisions").click()
    expect(page.get_by_role("heading", name="Decisions of round 1")).to_be_visible()

    filters = page.locator("#decision-filters")
    filters.get_by_label("Decision").select_option("accept")
    filters.get_by_role("button", name="Filter").click()
    rows = page.locator("[data-testid=decisions] tbody tr[id^=decision-]")
    total_accepted = PairDecision.objects.filter(round=round_, decision="accept").count()
    expect(rows).to_have_count(total_accepted)
    for effective in rows.get_by_test_id("effective").all():
        expect(effective).to_have_text("accept")

    row = page.locator(f"#decision-{chosen.pk}")
    expect(row).to_contain_text(f"#{chosen.item.number}")
    row.locator("summary", has_text="Override").click()
    form = row.locator("form.override-form")
    form.get_by_label("Decision").select_option("flip")
    form.get_by_label("Reason").fill(REASON)
    form.get_by_role("button", name="Save the override").click()
    expect(page.locator(".messages")).to_contain_text(f"Item {chosen.item.number}: flip (overridden).")
    # No longer accepted: the filtered list lets it go.
    expect(rows).to_have_count(total_accepted - 1)
    expect(page.locator(f"#decision-{chosen.pk}")).to_have_count(0)

    filters.get_by_label("Decision").select_option("flip")
    filters.get_by_role("button", name="Filter").click()
    row = page.locator(f"#decision-{chosen.pk}")
    expect(row.get_by_test_id("effective").locator("s")).to_have_text("accept")
    expect(row.get_by_test_id("effective").locator("strong")).to_have_text("flip")
    expect(row.get_by_test_id("override")).to_contain_text("flip by carol, ")
    expect(row.get_by_test_id("override").locator("q")).to_have_text(REASON)

    override = DecisionOverride.objects.get()
    assert (override.pair_decision_id, override.curator_id, override.decision) == (chosen.pk, curator.pk, "flip")
    chosen.refresh_from_db()
    assert (chosen.decision, chosen.effective) == ("accept", "flip")
    return chosen


def label_the_routed_pairs(page: Page, base_url: str, annotator, round_: CampaignRound) -> None:  # type: ignore[no-untyped-def]
    """The annotator is handed every routed pair before any other, highest priority first, and labels each."""
    routed = set(PairDecision.objects.filter(round=round_, routed=True).values_list("item_id", flat=True))
    assert len(routed) == round_.routed
    log_in(page, base_url, annotator)
    page.get_by_role("link", name=round_.campaign.project.name, exact=True).click()
    page.get_by_role("link", name="Start labeling").click()
    page.wait_for_url("**/label/")
    page.wait_for_load_state("load")  # the shortcuts come from deferred scripts
    card = page.locator("#item-card [data-item-id]")
    shown: list[int] = []
    for done in range(len(routed)):
        item_id = int(card.get_attribute("data-item-id") or 0)
        item = Item.objects.get(pk=item_id)
        assert item.pk in routed, (item.pk, item.priority, routed)
        assert item.priority > 0
        assert not shown or item.priority <= Item.objects.get(pk=shown[-1]).priority
        # The truth: the "yes ..." answer wins; of the two that say "no." alike, A.
        key = "6" if item.response_b.startswith("yes") else "2"
        expect(page.get_by_test_id("done")).to_have_text(str(done))
        page.keyboard.press(key)
        expect(page.locator(f'.strength-option[data-key="{key}"] input')).to_be_checked()
        page.keyboard.press("Enter")
        expect(page.get_by_test_id("done")).to_have_text(str(done + 1))
        expect(card).not_to_have_attribute("data-item-id", str(item_id))
        shown.append(item_id)
    assert set(shown) == routed
    # The routed pairs are done: the next is an ordinary pair.
    following = Item.objects.get(pk=int(card.get_attribute("data-item-id") or 0))
    assert following.pk not in routed
    assert following.priority == 0
    strengths = dict(Annotation.objects.filter(annotator=annotator).values_list("item_id", "strength"))
    assert set(strengths) == routed
    for item in Item.objects.filter(pk__in=routed):
        assert strengths[item.pk] == (2 if item.response_b.startswith("yes") else -2)


def see_the_round_freeze_and_the_campaign_finish(page: Page, campaign: Campaign) -> None:
    expect(page.locator("#campaign-status")).to_have_text(re.compile("^(Finished|Failed|Stopped by a curator)$"))
    campaign.refresh_from_db()
    round_ = CampaignRound.objects.select_related("version").get(campaign=campaign, number=1)
    assert campaign.status == Campaign.Status.FINISHED, (campaign.stop_reason, round_.error)
    expect(page.locator("#stop-reason")).to_contain_text("Stopped: 1 of 1 rounds done")
    # Polling stopped with the final state swapped in, never by a reload.
    expect(page.locator("#campaign-live")).not_to_have_attribute("hx-get", re.compile(".*"))
    assert page.evaluate("window.__marker") == 1
    row = page.locator("#round-1")
    expect(stage_cell(page)).to_contain_text("Done Done")
    expect(row.get_by_test_id("round-message")).to_have_count(0)
    expect(row.get_by_role("progressbar")).to_have_count(0)
    expect(row.get_by_role("button", name="Close round now")).to_have_count(0)
    expect_counts(row, round_)
    expect(row.get_by_test_id("round-labels")).to_have_text(f"{round_.routed} of {round_.routed} routed pairs labelled")
    accuracy = row.get_by_test_id("round-accuracy")
    expect(accuracy).to_have_text(re.compile(rf"^\d\.\d{{3}}( ± \d\.\d{{3}})? on {round_.gold_pairs} gold pairs$"))
    assert round_.gold_accuracy is not None
    assert abs(float((accuracy.text_content() or "").split()[0]) - round_.gold_accuracy) <= 0.0005
    expect(page.locator("#accuracy-plot g[data-round='1'] circle")).to_have_count(1)
    # The strength histogram of round 1: bars stacked by decision, and its table holds every decided pair.
    expect(page.get_by_role("heading", name="Strength histogram of round 1")).to_be_visible()
    expect(page.locator("#strength-histogram")).to_be_visible()
    assert page.locator("#strength-histogram rect").count() > 0
    decided = PairDecision.objects.filter(round=round_).count()
    assert sum(round_totals(round_).values()) == decided
    cells = page.locator("[data-testid=histogram-table] tbody td:not(:first-child)").all_text_contents()
    assert sum(int(cell) for cell in cells) == decided
    # The frozen version, one click away.
    assert round_.version is not None
    version_link = row.get_by_role("link", name=round_.version.name)
    expect(version_link).to_have_attribute(
        "href", reverse("curation:version_detail", args=[campaign.project_id, round_.version_id])
    )
    version_link.click()
    expect(page.get_by_role("heading", name=round_.version.name)).to_be_visible()
    expect(page.locator("#row-count")).to_have_text(str(round_.version.rows.count()))


def check_the_frozen_version(round_: CampaignRound, overridden: PairDecision) -> None:
    round_.refresh_from_db()
    version = round_.version
    assert version is not None
    # The routed pairs, labelled by the annotator, are gold in the round's version; the curator's flip counted.
    routed = set(PairDecision.objects.filter(round=round_, routed=True).values_list("item_id", flat=True))
    consensus = set(version.rows.filter(provenance=DatasetRow.Provenance.CONSENSUS).values_list("item_id", flat=True))
    assert routed <= consensus
    row = version.rows.get(item_id=overridden.item_id)
    # A curator's decision, not the ensemble's: it counts fully.
    assert row.provenance == DatasetRow.Provenance.ADJUDICATED
    assert (row.weight, row.margin) == (1.0, 1.0)
    assert row.labels["ensemble"]["override"] == "flip"
    # The curator's word is what the version keeps: the side against the pair's silver label.
    item = overridden.item
    assert row.chosen == (item.response_a if overridden.label_sign > 0 else item.response_b)
    assert not Item.objects.filter(project=round_.campaign.project, priority__gt=0).exists()
