import random
import re
import time
from collections import defaultdict

import pytest
from celery.contrib.testing.worker import start_worker
from celery.signals import task_postrun
from django.db import connections
from django.urls import reverse

from annotate.labels import DEFAULT_SCHEMA
from annotate.models import Annotation, Membership, Role
from concord import jobs
from concord.celery import app as celery_app
from curation.models import Adjudication, DatasetRow, DatasetVersion
from curation.services.quality import membership_weight_set
from curation.services.version_rows import VersionFilters, prompt_hash, split_for
from curation.services.versions import (
    VersionError,
    dataset_version_content_hash,
    dataset_version_create,
    dataset_version_freeze,
    dataset_version_update,
)
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, UserFactory, member
from tests.jobs import private_queue
from tests.waits import HANG_GUARD_S


def annotate_item(item, *strengths, origin=Annotation.Origin.HUMAN):  # type: ignore[no-untyped-def]
    return [AnnotationFactory(item=item, strength=s, origin=origin) for s in strengths]


def adjudicate(item, decision, strength=None, ratings=None):  # type: ignore[no-untyped-def]
    return Adjudication.objects.create(
        item=item, curator=UserFactory(), decision=decision, strength=strength, ratings=ratings or {}, reason="why"
    )


def freeze(project, **filters):  # type: ignore[no-untyped-def]
    version = dataset_version_create(name="v", projects=[project], filters=filters, created_by=None)
    return dataset_version_freeze(version=version)


def rows_by_item(version):  # type: ignore[no-untyped-def]
    return {row.item_id: row for row in DatasetRow.objects.filter(version=version)}


@pytest.fixture
def worker_closes_connections():  # type: ignore[no-untyped-def]
    """The worker runs tasks in a thread of this process; its database connection must close with each task."""

    def close(**_: object) -> None:
        connections.close_all()

    task_postrun.connect(close, weak=False)
    yield
    task_postrun.disconnect(close)


@pytest.fixture
def labelled_project():  # type: ignore[no-untyped-def]
    """Overlap 2. Each item is one case of what a version takes or leaves."""
    project = ProjectFactory(overlap=2)
    items = {name: ItemFactory(project=project) for name in ("a_wins", "adjudicated", "excluded", "tie", "short")}
    items |= {name: ItemFactory(project=project) for name in ("split_vote", "imported", "ambiguous")}
    annotate_item(items["a_wins"], -2, -1)
    annotate_item(items["adjudicated"], 1, 1)
    adjudicate(items["adjudicated"], Adjudication.Decision.LABEL, -3, {"a": {"helpfulness": 4}})
    annotate_item(items["excluded"], 2, 2)
    adjudicate(items["excluded"], Adjudication.Decision.LABEL, 2)
    adjudicate(items["excluded"], Adjudication.Decision.EXCLUDE)  # the latest decision wins
    annotate_item(items["tie"], 1, -1)
    annotate_item(items["short"], 3)
    annotate_item(items["split_vote"], 3, -1)
    annotate_item(items["imported"], 1, origin=Annotation.Origin.IMPORTED)
    annotate_item(items["ambiguous"], 2, 2)
    adjudicate(items["ambiguous"], Adjudication.Decision.AMBIGUOUS)
    return project, items


@pytest.mark.django_db
def test_it_builds_rows_from_agreed_and_adjudicated_items(labelled_project):
    project, items = labelled_project
    version = freeze(project)
    rows = rows_by_item(version)
    # The split vote (3 against -1) and the tie (1 against -1) are disputes: no curator decided, so they stay out.
    assert set(rows) == {items[n].pk for n in ("a_wins", "adjudicated", "imported")}
    a_wins = rows[items["a_wins"].pk]
    assert (a_wins.chosen, a_wins.rejected) == (items["a_wins"].response_a, items["a_wins"].response_b)
    assert (a_wins.margin, a_wins.weight, a_wins.provenance) == (0.5, 1.0, "human_consensus")
    assert a_wins.prompt == items["a_wins"].prompt
    assert len(a_wins.annotation_ids) == 2
    adjudicated = rows[items["adjudicated"].pk]
    assert (adjudicated.chosen, adjudicated.margin, adjudicated.provenance) == (
        items["adjudicated"].response_a,
        1.0,
        "adjudicated",
    )
    assert adjudicated.labels["chosen"]["ratings"] == {"helpfulness": 4}
    assert rows[items["imported"].pk].provenance == "imported"
    assert sorted(r.position for r in rows.values()) == [0, 1, 2]
    assert version.status == DatasetVersion.Status.FROZEN
    assert version.frozen_at is not None
    assert version.row_count == 3
    assert len(version.content_hash) == 64
    assert version.manifest["counts"]["provenance"] == {"human_consensus": 1, "adjudicated": 1, "imported": 1}
    assert version.manifest["counts"]["state"] == {"agreed": 2, "adjudicated": 1}
    assert version.manifest["consensus"]["rule"] == "mean"
    assert version.manifest["code_version"]
    assert version.manifest["schema_versions"] == {}  # factory annotations name no schema version
    assert sum(b["count"] for b in version.stats["margin_histogram"]) == 3


@pytest.mark.django_db
def test_disputed_items_come_in_only_when_asked_for(labelled_project):
    project, items = labelled_project
    rows = rows_by_item(freeze(project, states=["agreed", "adjudicated", "disputed"]))
    # The tie has no chosen response even then.
    assert set(rows) == {items[n].pk for n in ("a_wins", "adjudicated", "imported", "split_vote")}
    split_vote = rows[items["split_vote"].pk]
    assert (split_vote.chosen, split_vote.weight, split_vote.margin) == (items["split_vote"].response_b, 0.5, 0.3333)


@pytest.mark.django_db
def test_filters_narrow_the_rows(labelled_project):
    project, items = labelled_project
    everything = ["agreed", "adjudicated", "disputed"]
    assert set(rows_by_item(freeze(project, states=everything, min_agreement=0.6))) == {
        items[n].pk for n in ("a_wins", "adjudicated", "imported")
    }
    assert set(rows_by_item(freeze(project, states=["adjudicated"]))) == {items["adjudicated"].pk}
    assert set(rows_by_item(freeze(project, states=["disputed"]))) == {items["split_vote"].pk}
    assert set(rows_by_item(freeze(project, provenance=["imported"]))) == {items["imported"].pk}
    assert not rows_by_item(freeze(project, sources=["elsewhere"]))


@pytest.mark.django_db
def test_it_refuses_bad_filters():
    project = ProjectFactory()
    with pytest.raises(VersionError, match="add up to 1"):
        dataset_version_create(
            name="v",
            projects=[project],
            filters={"splits": {"train": 0.9, "validation": 0.2, "test": 0}},
            created_by=None,
        )
    with pytest.raises(VersionError, match="between 0 and 1"):
        dataset_version_create(name="v", projects=[project], filters={"min_agreement": 2}, created_by=None)


@pytest.mark.django_db
def test_a_frozen_version_never_changes(labelled_project):
    project, items = labelled_project
    version = freeze(project)
    before = {row.item_id: (row.chosen, row.margin, row.provenance, row.labels) for row in version.rows.all()}
    digest = version.content_hash
    # Later work on the items: a changed strength flips a consensus, a new decision excludes an item.
    Annotation.objects.filter(item=items["a_wins"]).update(strength=3)
    adjudicate(items["split_vote"], Adjudication.Decision.EXCLUDE)
    adjudicate(items["imported"], Adjudication.Decision.LABEL, -3)
    version.refresh_from_db()
    after = {row.item_id: (row.chosen, row.margin, row.provenance, row.labels) for row in version.rows.all()}
    assert after == before
    assert version.content_hash == digest == dataset_version_content_hash(version=version)
    with pytest.raises(VersionError, match="cannot be frozen again"):
        dataset_version_freeze(version=version)
    with pytest.raises(VersionError, match="never changes"):
        dataset_version_update(version=version, name="renamed", filters=VersionFilters())
    version.refresh_from_db()
    assert (version.name, version.content_hash, version.row_count) == ("v", digest, 3)
    # A new version of the same filters sees the new labels.
    assert set(rows_by_item(freeze(project))) == {items[n].pk for n in ("a_wins", "adjudicated", "imported")}


@pytest.mark.django_db
def test_the_same_prompt_never_spans_splits_and_the_seed_decides():
    project = ProjectFactory(overlap=1)
    prompts = [[{"role": "user", "content": f"Shared prompt {n}"}] for n in range(15)]
    for n in range(90):
        item = ItemFactory(project=project, prompt=prompts[n % 15], response_a=f"a{n}", response_b=f"b{n}")
        annotate_item(item, 1)
    splits = {"train": 0.5, "validation": 0.25, "test": 0.25}
    first, second, other_seed = (freeze(project, splits=splits, seed=seed) for seed in (7, 7, 8))
    by_prompt: dict[str, set[str]] = defaultdict(set)
    for row in first.rows.all():
        by_prompt[prompt_hash(row.prompt)].add(row.split)
    assert len(by_prompt) == 15
    assert all(len(found) == 1 for found in by_prompt.values())
    assert {split for found in by_prompt.values() for split in found} == {"train", "validation", "test"}
    assert first.content_hash == second.content_hash
    assert first.content_hash != other_seed.content_hash
    assert {r.item_id: r.split for r in first.rows.all()} == {r.item_id: r.split for r in second.rows.all()}


def test_split_for_follows_the_fractions():
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    counts: dict[str, int] = defaultdict(int)
    for n in range(5000):
        counts[split_for(prompt_hash(f"p{n}"), seed=3, fractions=fractions)] += 1
    assert 3800 < counts["train"] < 4200
    assert 350 < counts["test"] < 650
    assert split_for("x", seed=1, fractions={"train": 1.0, "validation": 0.0, "test": 0.0}) == "train"


# Pages.


def new_url(project) -> str:  # type: ignore[no-untyped-def]
    return reverse("curation:version_new", args=[project.pk])


def detail_url(project, version) -> str:  # type: ignore[no-untyped-def]
    return reverse("curation:version_detail", args=[project.pk, version.pk])


FORM = {
    "name": "rm-v1",
    "states": ["agreed", "adjudicated"],
    "consensus": "mean",
    "min_agreement": "0",
    "provenance": ["human_consensus", "adjudicated", "imported"],
    "sources": "",
    "train": "0.8",
    "validation": "0.1",
    "test": "0.1",
    "seed": "11",
}


@pytest.mark.django_db
def test_a_curator_builds_and_freezes_a_version_through_the_form(login, labelled_project):
    project, _ = labelled_project
    curator = member(project, Role.CURATOR)
    client = login(curator)
    assert client.get(new_url(project)).status_code == 200
    response = client.post(new_url(project), {**FORM, "projects": [project.pk]})
    version = DatasetVersion.objects.get()
    assert response.status_code == 302
    assert response["Location"] == detail_url(project, version)
    assert (version.status, version.row_count, version.created_by) == ("frozen", 3, curator)
    page = client.get(detail_url(project, version))
    assert page.status_code == 200
    assert version.content_hash.encode() in page.content
    assert b'id="strength-histogram"' in page.content
    assert b"<rect" in page.content
    assert b"None yet." in page.content
    assert b"hx-get" not in page.content
    child = client.post(new_url(project), {**FORM, "name": "rm-v2", "projects": [project.pk], "parent": version.pk})
    assert child.status_code == 302
    listing = client.get(reverse("curation:version_list", args=[project.pk]))
    assert b"rm-v1" in listing.content
    assert b"Used by training runs" in listing.content
    assert b"rm-v2" in listing.content
    assert DatasetVersion.objects.get(name="rm-v2").parent == version


@pytest.mark.django_db
def test_the_form_refuses_fractions_that_do_not_add_up(login):
    project = ProjectFactory()
    client = login(member(project, Role.CURATOR))
    response = client.post(new_url(project), {**FORM, "projects": [project.pk], "train": "0.9"})
    assert response.status_code == 422
    assert b"add up to 1" in response.content
    assert not DatasetVersion.objects.exists()


@pytest.mark.django_db
def test_annotators_and_outsiders_cannot_open_versions(login):
    project, other = ProjectFactory(), ProjectFactory()
    version = freeze(project)
    foreign = freeze(other)
    assert login(member(project, Role.ANNOTATOR)).get(detail_url(project, version)).status_code == 403
    assert login(member(project, Role.ANNOTATOR)).get(new_url(project)).status_code == 403
    assert login(member(other, Role.CURATOR)).get(detail_url(project, version)).status_code == 404
    curator = login(member(project, Role.CURATOR))
    assert curator.get(detail_url(project, version)).status_code == 200
    assert curator.get(reverse("curation:version_detail", args=[project.pk, foreign.pk])).status_code == 404


@pytest.mark.django_db
def test_a_version_of_two_projects_needs_a_curator_of_both(login):
    first, second = ProjectFactory(), ProjectFactory()
    version = dataset_version_create(name="both", projects=[first, second], filters={}, created_by=None)
    only_first = member(first, Role.CURATOR)
    assert login(only_first).get(detail_url(first, version)).status_code == 404
    both = member(first, Role.CURATOR)
    member_of_second = member(second, Role.ANNOTATOR)
    assert login(member_of_second).get(detail_url(second, version)).status_code == 403
    # Annotating the second project is not enough: the version carries its consensus and gold answers.
    membership = second.memberships.create(user=both, role=Role.ANNOTATOR)
    assert login(both).get(detail_url(first, version)).status_code == 404
    membership.role = Role.CURATOR
    membership.save()
    assert login(both).get(detail_url(first, version)).status_code == 200


@pytest.mark.django_db
def test_polling_a_finished_version_stops_with_286(login):
    project = ProjectFactory()
    version = freeze(project)
    response = login(member(project, Role.CURATOR)).get(detail_url(project, version), HTTP_HX_REQUEST="true")
    assert response.status_code == 286
    assert b'id="version-live"' in response.content
    assert b"<html" not in response.content
    DatasetVersion.objects.filter(pk=version.pk).update(status="freezing", row_count=1234)
    polling = login(member(project, Role.CURATOR)).get(detail_url(project, version), HTTP_HX_REQUEST="true")
    assert polling.status_code == 200
    assert b'<strong id="rows-written">1234</strong>' in polling.content
    assert b"hx-get" in polling.content


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("worker_closes_connections")
def test_a_large_version_is_frozen_by_a_real_worker(login, monkeypatch, labelled_project):
    from curation.services import versions as version_services

    project, _ = labelled_project
    monkeypatch.setattr(version_services, "INLINE_FREEZE_MAX_ITEMS", 0)  # every version counts as large
    queue = private_queue(monkeypatch, jobs.FREEZE)
    client = login(member(project, Role.CURATOR))
    with start_worker(celery_app, perform_ping_check=False, queues=[queue], shutdown_timeout=HANG_GUARD_S):
        response = client.post(new_url(project), {**FORM, "projects": [project.pk]})
        version = DatasetVersion.objects.get()
        deadline = time.monotonic() + HANG_GUARD_S
        while version.status in ("draft", "freezing") and time.monotonic() < deadline:
            time.sleep(0.1)
            version.refresh_from_db()
    assert response.status_code == 302
    assert (version.status, version.row_count) == ("frozen", 3), version.error
    assert client.get(detail_url(project, version), HTTP_HX_REQUEST="true").status_code == 286


@pytest.mark.django_db
def test_a_draft_is_frozen_from_its_page_and_only_by_curators(login, labelled_project):
    project, _ = labelled_project
    draft = dataset_version_create(name="draft", projects=[project], filters={}, created_by=None)
    url = reverse("curation:version_freeze", args=[project.pk, draft.pk])
    curator = login(member(project, Role.CURATOR))
    page = curator.get(detail_url(project, draft))
    assert url.encode() in page.content
    assert login(member(project, Role.ANNOTATOR)).post(url).status_code == 403
    assert curator.post(url).status_code == 302
    draft.refresh_from_db()
    assert (draft.status, draft.row_count) == ("frozen", 3)
    again = curator.post(url, follow=True)
    assert b"cannot be frozen again" in again.content


@pytest.mark.django_db
def test_a_version_frozen_with_the_default_filters_holds_no_unresolved_dispute(login):
    """The reported case: one annotator -3, the other +1 (mean -1) was frozen as "agreed" with weight 0.5."""
    project = ProjectFactory(overlap=2, schema=DEFAULT_SCHEMA)
    first, second = member(project), member(project)
    disputes = {
        "sign": [(-3, {}), (1, {})],
        "spread": [(3, {}), (0, {})],
        "rating": [(2, {"a": {"helpfulness": 0}}), (2, {"a": {"helpfulness": 4}})],
    }
    items = {name: ItemFactory(project=project) for name in [*disputes, "agreed", "decided"]}
    for name, labels in disputes.items():
        for annotator, (strength, ratings) in zip([first, second], labels, strict=True):
            AnnotationFactory(item=items[name], annotator=annotator, strength=strength, ratings=ratings)
    for name in ("agreed", "decided"):
        AnnotationFactory(item=items[name], annotator=first, strength=-3)
        AnnotationFactory(item=items[name], annotator=second, strength=-2 if name == "agreed" else 2)
    adjudicate(items["decided"], Adjudication.Decision.LABEL, 1)
    curator = login(member(project, Role.CURATOR))
    form = {k: v for k, v in FORM.items() if k not in ("states", "consensus")}  # as the form starts
    initial = curator.get(new_url(project)).context["form"]
    form |= {"states": initial["states"].initial, "consensus": initial["consensus"].initial, "projects": [project.pk]}
    assert curator.post(new_url(project), form).status_code == 302
    version = DatasetVersion.objects.get()
    assert set(rows_by_item(version)) == {items["agreed"].pk, items["decided"].pk}
    # The review queue lists exactly the disputes the version left out.
    queue = curator.get(reverse("curation:review_queue", args=[project.pk])).content.decode()
    assert sorted(int(i) for i in re.findall(r'<tr data-item-id="(\d+)"', queue)) == sorted(
        items[name].pk for name in disputes
    )


@pytest.fixture
def reliability_project():  # type: ignore[no-untyped-def]
    """Two careful annotators who agree with the truth, two careless ones who answer at random, and one item on
    which one careful annotator (B) stands against both careless ones (A)."""
    project = ProjectFactory(overlap=3)
    careful = [member(project) for _ in range(2)]
    careless = [member(project) for _ in range(2)]
    rng = random.Random(3)
    for n in range(40):
        truth = 1 if n % 2 else -1
        item = ItemFactory(project=project)
        for annotator in careful:
            AnnotationFactory(item=item, annotator=annotator, strength=2 * truth)
        for annotator in careless:
            AnnotationFactory(item=item, annotator=annotator, strength=rng.choice([-2, 2]))
    contested = ItemFactory(project=project)
    AnnotationFactory(item=contested, annotator=careful[0], strength=2)
    for annotator in careless:
        AnnotationFactory(item=contested, annotator=annotator, strength=-2)
    for membership in Membership.objects.filter(user__in=careless):
        membership_weight_set(membership=membership, weight=0.2)
    return project, contested


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("rule", "chosen", "weight"),
    [
        ("mean", "a", 2 / 3),  # mean strength (2 - 2 - 2) / 3: A, with two of three behind it
        ("weighted", "b", 1 / 1.4),  # 2 * 1 against 2 * 2 * 0.2: B; B's share of the weight is 1 / 1.4
        ("dawid_skene", "b", None),  # the careless annotators' labels tell little: B, with its posterior
    ],
)
def test_the_consensus_rule_decides_a_disputed_item_and_its_weight(reliability_project, rule, chosen, weight):
    project, contested = reliability_project
    version = freeze(project, states=["disputed"], consensus=rule)
    rows = rows_by_item(version)
    assert version.manifest["consensus"]["rule"] == rule
    row = rows[contested.pk]
    assert row.chosen == (contested.response_a if chosen == "a" else contested.response_b)
    if weight is not None:
        assert row.weight == pytest.approx(weight, abs=1e-4)
    else:
        assert 0.5 < row.weight <= 1
