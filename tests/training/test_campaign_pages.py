"""The campaign pages through HTTP: starting a campaign with its settings form, following its rounds with their
plots, and a round's decision list with a curator's override of each pair. Rounds and decisions are written with
the ORM here (no training): the rounds themselves are tests/training/test_campaigns.py's."""

import dataclasses
import re

import pytest
from django.urls import reverse

from annotate.models import GoldAnswer, Role
from annotate.rules import Pool
from concord import jobs
from curation.models import Adjudication
from curation.selectors_quality import pool_counts
from curation.tasks import project_quality_refresh_run
from tests.annotate.factories import AnnotationFactory, ItemFactory, MembershipFactory, ProjectFactory, member
from training.ml.synergy import CampaignSettings, Decision
from training.models import Campaign, CampaignRound, DecisionOverride, PairDecision

pytestmark = pytest.mark.django_db


def gold_project(gold: int = 12, silver: int = 3, unlabelled: int = 2):  # type: ignore[no-untyped-def]
    """A project (overlap 1) with `gold` human-verified pairs (one agreeing human annotation each), silver pairs
    (a source label, no human) and unlabelled ones."""
    project = ProjectFactory(overlap=1)
    for n in range(gold):
        AnnotationFactory(item=ItemFactory(project=project), strength=2 if n % 2 else -2)
    for n in range(silver):
        ItemFactory(project=project, source_label=1 if n % 2 else -1)
    for _ in range(unlabelled):
        ItemFactory(project=project)
    return project


def start_data(name: str = "first pass", **overrides: object) -> dict[str, object]:
    """The start form as a browser posts it: every setting at its default."""
    data: dict[str, object] = {"name": name, **CampaignSettings().to_dict()}
    data.update(overrides)
    return data


def list_url(project) -> str:  # type: ignore[no-untyped-def]
    return reverse("training:campaign_list", args=[project.pk])


def detail_url(campaign) -> str:  # type: ignore[no-untyped-def]
    return reverse("training:campaign_detail", args=[campaign.project_id, campaign.pk])


def decisions_url(round_) -> str:  # type: ignore[no-untyped-def]
    return reverse("training:decision_list", args=[round_.campaign.project_id, round_.campaign_id, round_.number])


def override_url(decision) -> str:  # type: ignore[no-untyped-def]
    round_ = decision.round
    return reverse(
        "training:decision_override",
        args=[round_.campaign.project_id, round_.campaign_id, round_.number, decision.pk],
    )


def make_campaign(project, status=Campaign.Status.RUNNING, name="toy") -> Campaign:  # type: ignore[no-untyped-def]
    return Campaign.objects.create(project=project, name=name, config=CampaignSettings().to_dict(), status=status)


HISTOGRAM = [
    {"low": -6.0, "high": -2.0, "counts": {"flip": 3, "uncertain": 1}},
    {"low": -2.0, "high": 2.0, "counts": {"uncertain": 5, "unlabelled": 2}},
    {"low": 2.0, "high": 6.0, "counts": {"accept": 7, "ai_label": 1}},
]


def decided_round(campaign, number: int = 1, **fields) -> CampaignRound:  # type: ignore[no-untyped-def]
    """A round that has decided, measured and routed, waiting for its labels."""
    defaults = {
        "stage": CampaignRound.Stage.LABEL,
        "status": CampaignRound.Status.WAITING,
        "message": "Waiting for the annotators: 0 of 2 routed pairs labelled",
        "done": 0,
        "total": 2,
        "gold_accuracy": 0.8,
        "gold_pairs": 25,
        "counts": {"silver": {"accept": 7, "flip": 3, "uncertain": 6}, "unlabelled": {"ai_label": 1, "unlabelled": 2}},
        "routed": 2,
        "histogram": HISTOGRAM,
    }
    return CampaignRound.objects.create(campaign=campaign, number=number, **{**defaults, **fields})


def decide(round_, item, decision: str, strength: float, **fields) -> PairDecision:  # type: ignore[no-untyped-def]
    defaults = {"pool": Pool.SILVER, "label_sign": 1, "spread": 0.1, "p_agree": 0.5}
    return PairDecision.objects.create(
        round=round_, item=item, decision=decision, strength=strength, **{**defaults, **fields}
    )


# Starting a campaign.


def test_an_admin_starts_a_campaign_through_the_form(login, sent_jobs, django_capture_on_commit_callbacks) -> None:  # type: ignore[no-untyped-def]
    project = gold_project()
    admin = login(member(project, Role.ADMIN))
    page = admin.get(list_url(project))
    html = page.content.decode()
    assert page.status_code == 200
    # Every setting is a field with its help text and default.
    for spec in dataclasses.fields(CampaignSettings):
        assert f'name="{spec.name}"' in html
        assert str(spec.metadata["help"]).replace("'", "&#x27;") in html
    assert page.context["form"].fields["accept_threshold"].initial == 0.7
    assert [c for c, _ in page.context["form"].fields["ensemble_kind"].choices] == ["seeds", "bootstrap"]
    with django_capture_on_commit_callbacks(execute=True):
        response = admin.post(list_url(project), start_data(ensemble_size=4, accept_threshold="0.8"))
    campaign = Campaign.objects.get(project=project)
    assert response.status_code == 302
    assert response["Location"] == detail_url(campaign)
    assert campaign.name == "first pass"
    assert campaign.config["ensemble_size"] == 4
    assert campaign.config["accept_threshold"] == 0.8
    assert campaign.status == Campaign.Status.RUNNING
    first = CampaignRound.objects.get(campaign=campaign)
    assert first.number == 1
    assert sent_jobs == [(jobs.CAMPAIGN_ROUND, first.pk)]
    listing = admin.get(list_url(project)).content.decode()
    assert detail_url(campaign) in listing
    assert "first pass" in listing


def test_settings_out_of_range_are_refused_beside_their_fields(login, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    project = gold_project()
    admin = login(member(project, Role.ADMIN))
    response = admin.post(list_url(project), start_data(accept_threshold="0.4", max_rounds=0))
    assert response.status_code == 422
    errors = response.context["form"].errors
    assert errors["accept_threshold"] == ["must be above 0.5 and below 1"]
    assert errors["max_rounds"] == ["must be between 1 and 100"]
    assert 'data-field="accept_threshold">must be above 0.5 and below 1<' in response.content.decode()
    # A value that is no number never reaches the service.
    response = admin.post(list_url(project), start_data(learning_rate="fast"))
    assert response.status_code == 422
    assert "learning_rate" in response.context["form"].errors
    assert not Campaign.objects.exists()
    assert not CampaignRound.objects.exists()
    assert not sent_jobs


def test_too_few_gold_pairs_say_how_many_there_are(login, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    project = gold_project(gold=3)
    response = login(member(project, Role.ADMIN)).post(list_url(project), start_data())
    assert response.status_code == 422
    [message] = response.context["form"].non_field_errors()
    assert "the project has 3 gold pairs" in message
    assert "needs at least 10" in message
    assert 'data-testid="start-errors"' in response.content.decode()
    assert not Campaign.objects.exists()
    assert not sent_jobs


def test_a_second_campaign_is_refused_while_one_runs(login, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    project = gold_project()
    make_campaign(project)
    response = login(member(project, Role.ADMIN)).post(list_url(project), start_data())
    assert response.status_code == 422
    assert "a campaign of this project is running" in response.content.decode()
    assert Campaign.objects.count() == 1


def test_only_admins_start_curators_look_and_annotators_and_outsiders_do_not(login, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    project = gold_project()
    curator = login(member(project, Role.CURATOR))
    page = curator.get(list_url(project))
    assert page.status_code == 200
    assert 'id="campaign-start"' not in page.content.decode()
    assert curator.post(list_url(project), start_data()).status_code == 403
    annotator = login(member(project, Role.ANNOTATOR))
    assert annotator.get(list_url(project)).status_code == 403
    assert annotator.post(list_url(project), start_data()).status_code == 403
    outsider = login(member(ProjectFactory(), Role.ADMIN))
    assert outsider.get(list_url(project)).status_code == 404
    assert outsider.post(list_url(project), start_data()).status_code == 404
    assert not Campaign.objects.exists()
    assert not sent_jobs
    # The nav offers the pages to curators.
    assert list_url(project).encode() in curator.get(reverse("curation:dashboard", args=[project.pk])).content


def test_ids_of_another_project_are_404_through_this_projects_urls(login, sent_jobs) -> None:  # type: ignore[no-untyped-def]
    project, other = ProjectFactory(), ProjectFactory()
    admin = member(project, Role.ADMIN)
    MembershipFactory(project=other, user=admin, role=Role.ADMIN)  # an admin of both
    client = login(admin)
    foreign = make_campaign(other)
    foreign_round = decided_round(foreign)
    foreign_decision = decide(foreign_round, ItemFactory(project=other), Decision.UNCERTAIN, 0.1)
    args = [project.pk, foreign.pk]
    assert client.get(reverse("training:campaign_detail", args=args)).status_code == 404
    assert client.post(reverse("training:campaign_stop", args=args)).status_code == 404
    assert client.post(reverse("training:campaign_round_close", args=[*args, 1])).status_code == 404
    assert client.get(reverse("training:decision_list", args=[*args, 1])).status_code == 404
    override = reverse("training:decision_override", args=[*args, 1, foreign_decision.pk])
    assert client.post(override, {"decision": "accept", "reason": "sure"}).status_code == 404
    # A round or decision that is not there in a campaign of this project.
    mine = make_campaign(project, status=Campaign.Status.FINISHED)
    mine_round = decided_round(mine)
    assert client.get(reverse("training:decision_list", args=[project.pk, mine.pk, 2])).status_code == 404
    elsewhere = reverse("training:decision_override", args=[project.pk, mine.pk, 1, foreign_decision.pk])
    assert client.post(elsewhere, {"decision": "accept", "reason": "sure"}).status_code == 404
    assert client.get(decisions_url(mine_round)).status_code == 200
    foreign.refresh_from_db()
    assert foreign.status == Campaign.Status.RUNNING
    assert not DecisionOverride.objects.exists()
    assert not sent_jobs


# The campaign page.


def test_the_campaign_page_shows_rounds_counts_accuracy_and_plots(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    campaign = make_campaign(project, name="<b>bold</b> pass")
    decided_round(
        campaign,
        1,
        stage=CampaignRound.Stage.DONE,
        status=CampaignRound.Status.DONE,
        gold_accuracy=0.7,
        gold_pairs=100,
        routed_labelled=2,
    )
    decided_round(campaign, 2, gold_accuracy=0.8, gold_pairs=25, done=1)
    response = login(member(project, Role.CURATOR)).get(detail_url(campaign))
    html = response.content.decode()
    assert response.status_code == 200
    assert "&lt;b&gt;bold&lt;/b&gt; pass" in html
    assert "<b>bold</b>" not in html
    assert html.count('<tr id="round-') == 2
    assert 'data-decision="silver:accept">accept 7<' in html
    assert 'data-decision="unlabelled:ai_label">ai_label 1<' in html
    # Accuracy with its standard error: sqrt(0.8 * 0.2 / 25) = 0.08; sqrt(0.7 * 0.3 / 100) = 0.046.
    assert "0.800 ± 0.080" in html
    assert "0.700 ± 0.046" in html
    assert "2 of 2 routed pairs labelled" in html  # round 1, finished: as it stood
    assert "0 of 2 routed pairs labelled" in html  # round 2, counted now
    # Round 2 is live: its message and progress, counted now (not the stale done=1 the worker last wrote), and
    # the button to close it.
    assert "Waiting for the annotators: 0 of 2 routed pairs labelled" in html
    assert 'aria-valuenow="0">' in html
    assert 'aria-valuenow="1"' not in html
    assert reverse("training:campaign_round_close", args=[project.pk, campaign.pk, 2]) in html
    assert reverse("training:campaign_round_close", args=[project.pk, campaign.pk, 1]) not in html
    assert reverse("training:campaign_stop", args=[project.pk, campaign.pk]) not in html  # admins only
    # The plots: accuracy with error bars, decision shares, and the latest histogram stacked by decision.
    assert 'id="accuracy-plot"' in html
    assert len(re.findall(r'<circle cx="[\d.]+" cy="[\d.]+" r="4" class="dot"/>', html)) == 2
    assert 'id="shares-plot"' in html
    assert "round 2: accept 7 of 19 (37%)" in html
    assert 'id="strength-histogram"' in html
    assert "Strength histogram of round 2" in html
    assert "Strength -6.00 to -2.00: flip 3" in html
    assert 'data-testid="decision-legend"' in html
    assert 'data-testid="histogram-table"' in html
    assert reverse("training:decision_list", args=[project.pk, campaign.pk, 2]) in html
    assert 'hx-trigger="every 2s"' in html
    # The settings, in CampaignSettings' order, with their help.
    settings = [setting.name for setting in response.context["settings"]]
    assert settings == [spec.name for spec in dataclasses.fields(CampaignSettings)]
    assert 'data-setting="accept_threshold"><code>0.7</code>' in html


def test_the_live_part_polls_while_the_campaign_runs_and_stops_with_286(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    campaign = make_campaign(project)
    decided_round(campaign)
    curator = login(member(project, Role.CURATOR))
    live = curator.get(detail_url(campaign), HTTP_HX_REQUEST="true")
    assert live.status_code == 200
    assert "<html" not in live.content.decode()
    assert 'id="campaign-live"' in live.content.decode()
    Campaign.objects.filter(pk=campaign.pk).update(status=Campaign.Status.FINISHED, stop_reason="3 of 3 rounds done")
    done = curator.get(detail_url(campaign), HTTP_HX_REQUEST="true")
    assert done.status_code == 286
    assert "3 of 3 rounds done" in done.content.decode()
    assert "hx-trigger" not in done.content.decode()


def test_a_curator_closes_a_round_waiting_for_labels_and_an_admin_stops_the_campaign(  # type: ignore[no-untyped-def]
    login, sent_jobs, django_capture_on_commit_callbacks
) -> None:
    project = ProjectFactory()
    campaign = make_campaign(project)
    round_ = decided_round(campaign)
    curator_user = member(project, Role.CURATOR)
    curator = login(curator_user)
    close = reverse("training:campaign_round_close", args=[project.pk, campaign.pk, 1])
    with django_capture_on_commit_callbacks(execute=True):
        assert curator.post(close)["Location"] == detail_url(campaign)
    round_.refresh_from_db()
    assert round_.closed_by == curator_user
    assert sent_jobs == [(jobs.CAMPAIGN_ROUND, round_.pk)]
    assert login(member(project, Role.ANNOTATOR)).post(close).status_code == 403
    stop = reverse("training:campaign_stop", args=[project.pk, campaign.pk])
    assert curator.post(stop).status_code == 403
    admin = login(member(project, Role.ADMIN))
    assert stop in admin.get(detail_url(campaign)).content.decode()
    assert admin.post(stop)["Location"] == detail_url(campaign)
    campaign.refresh_from_db()
    assert campaign.status == Campaign.Status.STOPPED
    # Stopping again says why not, on the page.
    page = admin.post(stop, follow=True).content.decode()
    assert "is not running" in page


def test_annotators_cannot_see_a_campaign(login) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory()
    round_ = decided_round(make_campaign(project))
    annotator = login(member(project, Role.ANNOTATOR))
    assert annotator.get(detail_url(round_.campaign)).status_code == 403
    assert annotator.get(decisions_url(round_)).status_code == 403


# The decision list.


@pytest.fixture
def decisions():  # type: ignore[no-untyped-def]
    """A round with four decided pairs: a sure flip, two uncertain ones (one routed) and an AI label."""
    project = ProjectFactory()
    round_ = decided_round(make_campaign(project))
    sneaky = ItemFactory(project=project, prompt=[{"role": "user", "content": "<script>alert(1)</script> why?"}])
    return {
        "round": round_,
        "flip": decide(round_, sneaky, Decision.FLIP, -3.5, p_agree=0.05),
        "unsure": decide(round_, ItemFactory(project=project), Decision.UNCERTAIN, -0.2, p_agree=0.45),
        "routed": decide(round_, ItemFactory(project=project), Decision.UNCERTAIN, 0.3, routed=True, p_agree=0.57),
        "ai": decide(round_, ItemFactory(project=project), Decision.AI_LABEL, 2.5, pool=Pool.UNLABELLED, label_sign=0),
    }


def listed(response) -> list[int]:  # type: ignore[no-untyped-def]
    return [int(pk) for pk in re.findall(r'<tr id="decision-(\d+)"', response.content.decode())]


def test_the_list_is_sorted_by_strength_and_escapes_prompts(login, decisions) -> None:  # type: ignore[no-untyped-def]
    round_ = decisions["round"]
    project = round_.campaign.project
    response = login(member(project, Role.CURATOR)).get(decisions_url(round_))
    assert response.status_code == 200
    ids = [decisions[k].pk for k in ("flip", "unsure", "routed", "ai")]
    assert listed(response) == ids
    html = response.content.decode()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; why?" in html
    assert "<script>alert(1)" not in html
    assert reverse("annotate:item_detail", args=[project.pk, decisions["flip"].item_id]) in html
    # The override choices follow the pool: a silver pair may be accepted, an unlabelled one labelled.
    ai_form = response.context["rows"][3][1]
    assert [c for c, _ in ai_form.fields["decision"].choices] == ["ai_label", "drop", "route"]
    silver_form = response.context["rows"][0][1]
    assert [c for c, _ in silver_form.fields["decision"].choices] == ["accept", "flip", "drop", "route"]


def test_the_list_filters_by_decision_source_routed_and_strength(login, decisions) -> None:  # type: ignore[no-untyped-def]
    round_ = decisions["round"]
    client = login(member(round_.campaign.project, Role.CURATOR))
    url = decisions_url(round_)
    assert listed(client.get(url, {"decision": "uncertain"})) == [decisions["unsure"].pk, decisions["routed"].pk]
    assert listed(client.get(url, {"source": "unlabelled"})) == [decisions["ai"].pk]
    assert listed(client.get(url, {"routed": "yes"})) == [decisions["routed"].pk]
    assert listed(client.get(url, {"min_strength": "-1", "max_strength": "1"})) == [
        decisions["unsure"].pk,
        decisions["routed"].pk,
    ]
    assert listed(client.get(url, {"decision": "uncertain", "min_strength": "0"})) == [decisions["routed"].pk]
    # Pages keep the filters in their links.
    page = client.get(url, {"decision": "uncertain"}).content.decode()
    assert "Page 1 of 1" in page


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ({"min_strength": "strong"}, "Enter a number."),
        ({"max_strength": "nan"}, "Enter a number."),
        ({"min_strength": "2", "max_strength": "1"}, "must not be below the lower bound (2)"),
        ({"decision": "maybe"}, "Select a valid choice."),
    ],
)
def test_a_bad_filter_is_explained_not_a_500(login, decisions, query, message) -> None:  # type: ignore[no-untyped-def]
    round_ = decisions["round"]
    response = login(member(round_.campaign.project, Role.CURATOR)).get(decisions_url(round_), query)
    assert response.status_code == 400
    html = response.content.decode()
    assert 'data-testid="filter-errors"' in html
    assert message in html
    assert listed(response) == []


def test_a_curator_overrides_a_decision_with_a_reason_and_the_list_shows_it(login, decisions) -> None:  # type: ignore[no-untyped-def]
    round_, pair = decisions["round"], decisions["unsure"]
    curator = member(round_.campaign.project, Role.CURATOR, username="carol")
    client = login(curator)
    query = "decision=uncertain&min_strength=-1"
    response = client.post(f"{override_url(pair)}?{query}", {"decision": "accept", "reason": "B is <right>"})
    assert response.status_code == 302
    assert response["Location"] == f"{decisions_url(round_)}?{query}#decision-{pair.pk}"
    override = DecisionOverride.objects.get()
    assert (override.pair_decision_id, override.curator, override.decision) == (pair.pk, curator, "accept")
    assert override.reason == "B is <right>"
    pair.refresh_from_db()
    assert pair.effective == "accept"
    # No longer uncertain: the filtered list lets it go; the accepted ones show it with who and why.
    assert listed(client.get(decisions_url(round_), {"decision": "uncertain"})) == [decisions["routed"].pk]
    accepted = client.get(decisions_url(round_), {"decision": "accept"})
    assert listed(accepted) == [pair.pk]
    html = accepted.content.decode()
    assert '<s class="muted">uncertain</s> <strong>accept</strong>' in html
    assert "accept by carol" in html
    assert "<q>B is &lt;right&gt;</q>" in html


def test_an_override_without_a_reason_is_refused_beside_the_field(login, decisions) -> None:  # type: ignore[no-untyped-def]
    round_, pair = decisions["round"], decisions["unsure"]
    client = login(member(round_.campaign.project, Role.CURATOR))
    response = client.post(f"{override_url(pair)}?decision=uncertain", {"decision": "accept", "reason": "   "})
    assert response.status_code == 422
    html = response.content.decode()
    assert 'data-testid="override-errors"' in html
    assert "say why: the next curator reads it" in html
    [(_, form)] = [(row, form) for row, form in response.context["rows"] if row.decision.pk == pair.pk]
    assert form.errors["reason"] == ["say why: the next curator reads it"]
    # A choice the pair's pool does not allow never reaches the service either.
    response = client.post(override_url(decisions["ai"]), {"decision": "accept", "reason": "sure"})
    assert response.status_code == 422
    assert not DecisionOverride.objects.exists()
    pair.refresh_from_db()
    assert pair.override == ""
    annotator = login(member(round_.campaign.project, Role.ANNOTATOR))
    assert annotator.post(override_url(pair), {"decision": "accept", "reason": "sure"}).status_code == 403


def test_a_frozen_round_offers_no_override(login, decisions) -> None:  # type: ignore[no-untyped-def]
    round_ = decisions["round"]
    CampaignRound.objects.filter(pk=round_.pk).update(stage=CampaignRound.Stage.DONE, status=CampaignRound.Status.DONE)
    client = login(member(round_.campaign.project, Role.CURATOR))
    html = client.get(decisions_url(round_)).content.decode()
    assert "override-form" not in html
    assert "this round's version is frozen" in html
    response = client.post(override_url(decisions["unsure"]), {"decision": "accept", "reason": "sure"})
    assert response.status_code == 422
    assert "round 1 is frozen" in response.content.decode()


# Pools.


def test_pool_counts_appear_on_the_dashboard_and_the_campaign_list(  # type: ignore[no-untyped-def]
    login, sent_jobs, django_capture_on_commit_callbacks
) -> None:
    project = gold_project(gold=4, silver=3, unlabelled=2)
    curator_user = member(project, Role.CURATOR)
    disputed = ItemFactory(project=project)
    AnnotationFactory(item=disputed, strength=2)
    AnnotationFactory(item=disputed, strength=-2)  # Concord's annotators disagree: with the humans
    excluded = ItemFactory(project=project, source_label=1)
    Adjudication.objects.create(item=excluded, curator=curator_user, decision="exclude", reason="off topic")
    gold_item = ItemFactory(project=project, is_gold=True)
    GoldAnswer.objects.create(item=gold_item, preference_sign=1)
    expected = {"gold": 5, "with humans": 1, "silver": 3, "unlabelled": 2, "excluded": 1}
    assert pool_counts(project=project) == expected
    curator = login(curator_user)
    # Both pages show the counts a worker cached: the first view asks for them, the worker computes them.
    with django_capture_on_commit_callbacks(execute=True):
        assert 'data-testid="pools-pending"' in curator.get(list_url(project)).content.decode()
    [(_, quality_id)] = sent_jobs
    project_quality_refresh_run(quality_id)
    for url in (reverse("curation:dashboard", args=[project.pk]), list_url(project)):
        html = curator.get(url).content.decode()
        for pool, count in expected.items():
            assert f'data-pool="{pool}">{count}<' in html, (url, pool)
    assert 'data-testid="pools-age">0\xa0minutes ago<' in html, "the campaign list says how old they are"
