"""The pages under the Content-Security-Policy in Chromium: labeling (one label submitted through htmx), the review
queue and adjudication (a decision recorded), and the training pages (runs, a run polling live, a campaign, a
round's decisions) work, and the browser reports no violation of the policy on any of them.

Violations are heard twice: a `securitypolicyviolation` listener that every document gets before its own scripts
(page.add_init_script), reporting to the test through an exposed function, and Chromium's console, where it logs
each refusal. The first test proves the listeners hear one."""

from dataclasses import dataclass, field

import pytest
from django.urls import reverse
from playwright.sync_api import ConsoleMessage, Page, expect

from annotate.labels import DEFAULT_SCHEMA, PREFERENCE_ONLY_SCHEMA
from annotate.models import Annotation, Role
from curation.models import Adjudication
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member
from tests.browser import log_in
from tests.training.conftest import frozen_version
from tests.training.test_campaign_pages import decide, decided_round, make_campaign
from tests.training.test_runs import make_model, make_run
from training.models import TrainingRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Preference with the error categories (and their colours) of the default schema: swatches on the labeling page,
# coloured marks on the adjudication page.
SCHEMA = {**PREFERENCE_ONLY_SCHEMA, "spans": DEFAULT_SCHEMA["spans"]}

LISTEN = """() => document.addEventListener("securitypolicyviolation", (event) => window.__cspViolation(
  `${event.violatedDirective} refused ${event.blockedURI || "inline"} at ${event.sourceFile}:${event.lineNumber}`
  + ` ${event.sample}`))"""


@dataclass
class Violations:
    page: Page
    heard: list[str] = field(default_factory=list)

    def none_on(self, what: str) -> None:
        """No violation so far; a round trip first, so that reports already sent have arrived."""
        self.page.evaluate("1")
        assert not self.heard, f"{what}: {self.heard}"


@pytest.fixture
def violations(page: Page) -> Violations:
    found = Violations(page)
    page.expose_function("__cspViolation", lambda report: found.heard.append(f"event: {report}"))
    page.add_init_script(script=f"({LISTEN})()")

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            found.heard.append(f"console: {message.text}")

    page.on("console", on_console)
    return found


def test_the_listeners_hear_a_violation(live_server, page: Page, violations: Violations) -> None:  # type: ignore[no-untyped-def]
    page.goto(live_server.url + reverse("login"))
    page.evaluate("""() => document.body.insertAdjacentHTML("beforeend", '<p id="styled" style="color: red">x</p>')""")
    expect(page.locator("#styled")).to_have_count(1)
    page.evaluate("1")
    assert any("style-src" in report for report in violations.heard), violations.heard


def test_labeling_submits_a_label_with_no_violation(live_server, page: Page, violations: Violations) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1, schema=SCHEMA)
    ItemFactory.create_batch(2, project=project)
    annotator = member(project)
    log_in(page, live_server.url, annotator)
    page.goto(live_server.url + reverse("annotate:project_queue", args=[project.pk]))
    page.get_by_role("link", name="Start labeling").click()
    card = page.locator("#item-card [data-item-id]")
    expect(card).to_be_visible()
    expect(page.locator(".span-legend svg.swatch rect").first).to_have_attribute("fill", "#f4a261")
    # htmx is configured for the policy: no eval, no injected indicator styles.
    assert page.evaluate("htmx.config.allowEval") is False
    assert page.evaluate("htmx.config.includeIndicatorStyles") is False
    first = card.get_attribute("data-item-id")
    page.locator('.strength-option[data-key="7"]').click()
    page.get_by_role("button", name="Submit").click()
    expect(page.get_by_test_id("done")).to_have_text("1")
    expect(card).not_to_have_attribute("data-item-id", str(first))
    assert Annotation.objects.filter(annotator=annotator, item_id=first).exists()
    violations.none_on("labeling")


def test_review_and_adjudication_work_with_no_violation(live_server, page: Page, violations: Violations) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=2, schema=SCHEMA)
    split = ItemFactory(project=project, response_a="A claim that is wrong.")
    marked = [{"response": "a", "start": 2, "end": 7, "category": "irrelevant"}]
    AnnotationFactory(item=split, annotator=member(project), strength=-2, spans=marked)
    AnnotationFactory(item=split, annotator=member(project), strength=2)
    curator = member(project, Role.CURATOR)
    log_in(page, live_server.url, curator)

    page.goto(live_server.url + reverse("curation:review_queue", args=[project.pk]))
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    violations.none_on("the review queue")
    page.get_by_role("link", name=f"Item {split.number}").click()
    expect(page.get_by_role("heading", name=f"Adjudicate item {split.number}")).to_be_visible()
    # The marked span takes its category's colour from static/span-colors.js, not from a style attribute.
    mark = page.locator("mark.span-mark").first
    expect(mark).to_have_text("claim")
    expect(mark).to_have_css("border-bottom-color", "rgb(244, 162, 97)")
    violations.none_on("the adjudication page")

    page.get_by_role("radio", name="Final label set").check()
    page.get_by_role("combobox", name="Final label").select_option("2")
    page.get_by_label("Reason").fill("B is right.")
    page.get_by_role("button", name="Record decision").click()
    expect(page.get_by_role("heading", name="Review queue")).to_be_visible()
    assert Adjudication.objects.filter(item=split, curator=curator).exists()
    violations.none_on("recording a decision")


def test_the_training_pages_work_with_no_violation(live_server, page: Page, violations: Violations) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    version = frozen_version(project, count=4)
    finished = make_run(project, version, status=TrainingRun.Status.SUCCEEDED)
    make_model(finished, model_card={"metrics": {"heldout": {"accuracy": 0.7}, "heldout_pairs": 200}})
    running = make_run(project, version, status=TrainingRun.Status.RUNNING, step=10, total_steps=40)
    campaign = make_campaign(project)
    round_ = decided_round(campaign)
    decide(round_, ItemFactory(project=project), "accept", 1.5)
    log_in(page, live_server.url, member(project, Role.ADMIN))

    page.goto(live_server.url + reverse("training:run_list", args=[project.pk]))
    expect(page.locator("#heldout-chart")).to_be_visible()
    violations.none_on("the runs page")

    page.goto(live_server.url + reverse("training:run_detail", args=[project.pk, running.pk]))
    progress = page.locator("#run-live [role=progressbar]")
    expect(progress.locator("rect.bar")).to_have_attribute("width", "25")
    # The page polls through htmx: the next step arrives in a swapped fragment.
    TrainingRun.objects.filter(pk=running.pk).update(step=30)
    expect(progress.locator("rect.bar")).to_have_attribute("width", "75")
    violations.none_on("a run's page, polling")

    page.goto(live_server.url + reverse("training:campaign_detail", args=[project.pk, campaign.pk]))
    expect(page.get_by_test_id("decision-legend").locator("svg.swatch").first).to_be_visible()
    violations.none_on("the campaign page")

    page.goto(live_server.url + reverse("training:decision_list", args=[project.pk, campaign.pk, round_.number]))
    expect(page.locator("#decision-filters .filters")).to_have_css("display", "flex")
    violations.none_on("a round's decisions")

    page.goto(live_server.url + reverse("training:selection", args=[project.pk]))
    expect(page.locator("#learning-curve circle")).to_have_count(1)
    violations.none_on("the selection page")
