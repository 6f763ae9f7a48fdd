"""curation.rule_sql mirrors annotate.rules: on items covering every state, reason and decision, the SQL state,
queue membership and severity equal the Python rules' (which the pages then show)."""

import itertools

import pytest

from annotate import rules
from annotate.models import Annotation, Item
from annotate.selectors import item_label_summary
from curation import rule_sql
from curation.models import Adjudication, DatasetVersion, ItemFlag
from curation.selectors_quality import item_states
from curation.selectors_review import REASONS, ModelScores, disagreement_queue
from curation.services.review_state import review_queue_sync
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, UserFactory
from training.models import ItemScore, RewardModel, TrainingRun

pytestmark = pytest.mark.django_db

STRENGTHS = [(), (2,), (2, 1), (-3, -1), (2, -1), (3, 0), (1, -1), (0, 0), (-3, 1), (1, 1, -1), (-1, -1, 2, 2)]
RATINGS = [None, ({"a": {"helpfulness": 0}}, {"a": {"helpfulness": 4}})]
ORIGINS = ["human", "imported"]
# Each a list of decisions in the order made (the last is the latest), with the extra annotations "more" asked.
DECISIONS = [[], ["label"], ["exclude"], ["ambiguous"], ["more"], ["label", "exclude"], ["exclude", "more"]]
FLAGS = ["none", "open", "resolved"]
MODEL = [None, 0.95, 0.05, 0.5]
SOURCE_LABELS = [None, 1, -1]
THRESHOLD = 0.8


def decide(item: Item, decisions: list[str], curator) -> None:  # type: ignore[no-untyped-def]
    for decision in decisions:
        strength = -2 if decision == "label" else None
        Adjudication.objects.create(item=item, curator=curator, decision=decision, strength=strength, reason="r")
        if decision == "more":
            Item.objects.filter(pk=item.pk).update(extra_overlap=1)


def active_model(project) -> RewardModel:  # type: ignore[no-untyped-def]
    version = DatasetVersion.objects.create(name="v", status=DatasetVersion.Status.FROZEN)
    run = TrainingRun.objects.create(project=project, dataset_version=version, status=TrainingRun.Status.SUCCEEDED)
    return RewardModel.objects.create(project=project, run=run, path="/models/x", is_active=True)


def build_cases(project) -> list[tuple[Item, str | None, bool, float | None]]:  # type: ignore[no-untyped-def]
    """Items over every strength set, decision and flag; each with its latest decision, open flag and model p(B)."""
    curator, flagger = UserFactory(), UserFactory()
    model = active_model(project)
    cases = []
    # Every strength set with every decision and every flag; ratings, origin and the model's view cycle along,
    # so that each of their values meets every decision too (a full product would be 3,700 items).
    for index, (strengths, decisions, flag) in enumerate(itertools.product(STRENGTHS, DECISIONS, FLAGS)):
        ratings, origin, p_b = RATINGS[index % 2], ORIGINS[index // 2 % 2], MODEL[index // 4 % 4]
        # Gold items and the source's own labels cycle along too (for the pools).
        source_label, is_gold = SOURCE_LABELS[index // 16 % 3], index % 29 == 0
        item = ItemFactory(project=project, source_label=source_label, is_gold=is_gold)
        for position, strength in enumerate(strengths):
            given = ratings[position % 2] if ratings else {}
            AnnotationFactory(item=item, strength=strength, origin=origin, ratings=given)
        decide(item, decisions, curator)
        if flag != "none":
            ItemFlag.objects.create(item=item, raised_by=flagger, reason="look", resolved=flag == "resolved")
        if p_b is not None:
            ItemScore.objects.create(item=item, reward_model=model, reward_a=0, reward_b=0, margin=0, probability_b=p_b)
        cases.append((item, decisions[-1] if decisions else None, flag == "open", p_b))
    return cases


def python_view(item: Item, decision: str | None, open_flag: bool, p_b: float | None):  # type: ignore[no-untyped-def]
    annotations = Annotation.objects.filter(item=item).values_list("origin", "strength", "ratings")
    item.refresh_from_db()
    summary = rules.label_summary(list(annotations), wanted=item.project.overlap + item.extra_overlap)
    assert summary == item_label_summary(item, overlap=item.project.overlap)  # the columns, too
    contradicts = rules.model_contradicts(summary, p_b, THRESHOLD)
    state = rules.item_state(summary, decision)
    queued = rules.in_review_queue(summary, decision, open_flag=open_flag, model_contradicts=contradicts)
    found = rules.reasons(summary, open_flag=open_flag, model_contradicts=contradicts)
    pool = rules.pool(summary, decision, is_gold=item.is_gold, source_label=item.source_label)
    return state, queued, rules.severity(summary, found), {reason.code for reason in found}, pool


def test_sql_and_python_agree_on_every_state_and_the_queue() -> None:
    project = ProjectFactory(overlap=2)
    cases = build_cases(project)
    states = dict(
        Item.objects.filter(project=project)
        .annotate(spread=rule_sql.strength_spread(), state=rule_sql.item_state(project))
        .values_list("id", "state")
    )
    pools = dict(rule_sql.with_pools(Item.objects.filter(project=project), project).values_list("id", "pool"))
    model = ModelScores(scores=ItemScore.objects.all(), threshold=THRESHOLD)
    review_queue_sync(project=project, model=model)
    queue = {row["id"]: row for row in disagreement_queue(project=project, model=model)}
    by_reason = {
        code: {row["id"] for row in disagreement_queue(project=project, model=model, reason=code)} for code in REASONS
    }
    seen_states, seen_reasons, seen_pools = set(), set(), set()
    for item, decision, open_flag, p_b in cases:
        state, queued, severity, reasons, pool = python_view(item, decision, open_flag, p_b)
        assert states[item.pk] == state, (item.pk, decision)
        assert pools[item.pk] == pool, (item.pk, state, item.source_label, item.is_gold)
        seen_pools.add(pool)
        if item.is_gold:
            continue  # gold items measure annotators: the review queue leaves them out
        assert (item.pk in queue) == queued, (item.pk, state, open_flag, p_b)
        if queued:
            assert queue[item.pk]["review_severity"] == pytest.approx(severity), item.pk
            seen_reasons |= reasons
        for code, listed in by_reason.items():
            assert (item.pk in listed) == (queued and code in reasons), (item.pk, code)
        seen_states.add(state)
    assert seen_states == set(rules.ItemState)
    assert seen_pools == set(rules.Pool)
    assert seen_reasons == set(REASONS) - {"ensemble"}
    # A campaign's ensemble in the model's place: the same items, under their own reason, and none under "model".
    ensemble = ModelScores(scores=ItemScore.objects.all(), threshold=THRESHOLD, name="ensemble", reason="ensemble")
    review_queue_sync(project=project, model=ensemble)
    listed = {row["id"] for row in disagreement_queue(project=project, model=ensemble, reason="ensemble")}
    assert listed == by_reason["model"]
    assert listed
    assert not disagreement_queue(project=project, model=ensemble, reason="model").exists()
    assert not by_reason["ensemble"]
    counted = item_states(project=project)
    ordinary = [item for item, *_ in cases if not item.is_gold]  # the dashboard counts gold items apart
    assert counted == {str(s): sum(1 for item in ordinary if states[item.pk] == s) for s in rules.ItemState}


def test_the_rules_know_the_decisions_curation_records() -> None:
    assert set(Adjudication.Decision.values) == {rules.LABEL, rules.AMBIGUOUS, rules.EXCLUDE, rules.MORE}
