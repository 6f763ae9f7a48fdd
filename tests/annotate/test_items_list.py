"""The items list (annotate:item_list) and the item page (annotate:item_detail): search, filters, sorting, the
bounded scan, previous/next within the list, decisions, model scores, the synergy decision, and access."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotate import selectors_items
from annotate.models import ImportBatch, Item, Role
from curation.models import ItemFlag
from curation.services.adjudication import adjudication_record
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db


def listed(client, project, **params) -> list[int]:  # type: ignore[no-untyped-def]
    response = client.get(reverse("annotate:item_list", args=[project.pk]), params)
    assert response.status_code == 200
    return [row.item.pk for row in response.context["rows"]]


@pytest.fixture
def project():  # type: ignore[no-untyped-def]
    return ProjectFactory(overlap=2)


@pytest.fixture
def curator(login, project):  # type: ignore[no-untyped-def]
    return login(member(project, Role.CURATOR))


def test_it_finds_items_by_prompt_response_source_and_number(curator, project) -> None:  # type: ignore[no-untyped-def]
    llama = ItemFactory(project=project, prompt=[{"role": "user", "content": "Tell me about llamas"}])
    answer = ItemFactory(project=project, response_b="Paris is the capital of France.")
    sourced = ItemFactory(project=project, source="anthropic/hh-rlhf")
    other = ItemFactory(project=project)
    assert listed(curator, project, q="LLAMAS") == [llama.pk]
    assert listed(curator, project, q="capital of france") == [answer.pk]
    assert listed(curator, project, q="hh-rlhf") == [sourced.pk]
    assert other.number == 4
    assert listed(curator, project, q="4") == listed(curator, project, q="#4") == [other.pk]
    assert listed(curator, project, q="no such words anywhere") == []


def test_it_filters_by_gold_source_batch_and_annotations(curator, project) -> None:  # type: ignore[no-untyped-def]
    batch = ImportBatch.objects.create(project=project, file_name="a.jsonl", format="trl", seed=1)
    gold = ItemFactory(project=project, is_gold=True, source="web")
    imported = ItemFactory(project=project, import_batch=batch)
    annotated = ItemFactory(project=project)
    AnnotationFactory(item=annotated, strength=2)
    assert listed(curator, project, gold="1") == [gold.pk]
    assert gold.pk not in listed(curator, project, gold="0")
    assert listed(curator, project, source="web") == [gold.pk]
    assert listed(curator, project, batch=batch.pk) == [imported.pk]
    assert listed(curator, project, min_annotations=1) == [annotated.pk]
    assert annotated.pk not in listed(curator, project, max_annotations=0)


def test_it_filters_by_state_flag_and_model_probability(curator, project) -> None:  # type: ignore[no-untyped-def]
    disputed, agreed, fresh = ItemFactory(project=project), ItemFactory(project=project), ItemFactory(project=project)
    for strength in (-2, 3):
        AnnotationFactory(item=disputed, strength=strength)
    for strength in (2, 2):
        AnnotationFactory(item=agreed, strength=strength)
    curator_user = member(project, Role.CURATOR, username="flagger")
    ItemFlag.objects.create(item=fresh, raised_by=curator_user, reason="broken")
    Item.objects.filter(pk=agreed.pk).update(model_probability_b=0.9)
    assert listed(curator, project, state="disputed") == [disputed.pk]
    assert listed(curator, project, state="agreed") == [agreed.pk]
    assert listed(curator, project, state="unlabelled") == [fresh.pk]
    assert listed(curator, project, flagged="1") == [fresh.pk]
    assert listed(curator, project, min_p_b="0.8") == [agreed.pk]
    adjudication_record(item=disputed, curator=curator_user, decision="exclude", reason="off topic")
    assert listed(curator, project, state="excluded") == [disputed.pk]


def test_columns_sort_by_real_links_both_ways(curator, project) -> None:  # type: ignore[no-untyped-def]
    b, a, c = (ItemFactory(project=project, source=source) for source in ("b", "a", "c"))
    AnnotationFactory(item=c, strength=1)
    assert listed(curator, project, sort="source") == [a.pk, b.pk, c.pk]
    assert listed(curator, project, sort="-source") == [c.pk, b.pk, a.pk]
    assert listed(curator, project, sort="-annotations")[0] == c.pk
    assert listed(curator, project, sort="-number") == [c.pk, a.pk, b.pk]
    html = curator.get(reverse("annotate:item_list", args=[project.pk]), {"sort": "source", "q": "answer"}).content
    assert b'href="?q=answer&amp;sort=-source"' in html, "the sorted column's link sorts it the other way, filters kept"
    assert b'aria-sort="ascending"' in html


def test_it_pages_without_counting_the_project(curator, project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(selectors_items, "PER_PAGE", 2)
    items = [ItemFactory(project=project).pk for _ in range(5)]
    assert listed(curator, project) == items[:2]
    assert listed(curator, project, page=3) == items[4:]
    with CaptureQueriesContext(connection) as queries:
        curator.get(reverse("annotate:item_list", args=[project.pk]))
    assert not [q["sql"] for q in queries.captured_queries if re.search(r'COUNT\(\*\).*FROM "annotate_item"', q["sql"])]


def test_the_list_reads_no_row_by_row(curator, project) -> None:  # type: ignore[no-untyped-def]
    def queries(**params: str) -> int:
        with CaptureQueriesContext(connection) as captured:
            assert curator.get(reverse("annotate:item_list", args=[project.pk]), params).status_code == 200
        return len(captured.captured_queries)

    ItemFactory(project=project)
    few = queries(state="agreed"), queries()
    for item in ItemFactory.create_batch(12, project=project):
        AnnotationFactory(item=item, strength=1)
    assert (queries(state="agreed"), queries()) == few


def test_a_search_reads_a_bounded_window_and_says_so(curator, project, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(selectors_items, "SCAN_WINDOW", 3)
    items = [ItemFactory(project=project, response_a=f"needle {n}").pk for n in range(5)]
    response = curator.get(reverse("annotate:item_list", args=[project.pk]), {"q": "needle"})
    assert [row.item.pk for row in response.context["rows"]] == items[:3]
    html = response.content.decode()
    assert 'data-testid="scan-note"' in html
    link = re.search(r'href="\?([^"]*)" data-testid="next-window"', html)
    assert link is not None
    following = curator.get(
        reverse("annotate:item_list", args=[project.pk]) + "?" + link.group(1).replace("&amp;", "&")
    )
    assert [row.item.pk for row in following.context["rows"]] == items[3:]
    assert (
        'data-testid="scan-note"' not in curator.get(reverse("annotate:item_list", args=[project.pk])).content.decode()
    )


def test_prompts_show_the_turn_being_answered_at_length(curator, project) -> None:  # type: ignore[no-untyped-def]
    opening = "You are a helpful assistant. " * 5
    question = "Which of the two bridges in the photo is older, and how can you tell from the stonework? " * 2
    ItemFactory(project=project, prompt=[{"role": "system", "content": opening}, {"role": "user", "content": question}])
    html = curator.get(reverse("annotate:item_list", args=[project.pk])).content.decode()
    assert question.strip()[:180] in html
    assert "(2 turns)" in html


def test_untrusted_text_is_escaped_in_the_list(curator, project) -> None:  # type: ignore[no-untyped-def]
    ItemFactory(project=project, prompt=[{"role": "user", "content": "<script>alert(1)</script>"}], source="<b>x</b>")
    html = curator.get(reverse("annotate:item_list", args=[project.pk]), {"q": "<script>"}).content.decode()
    assert "<script>alert(1)" not in html
    assert "&lt;script&gt;alert(1)" in html
    assert "<b>x</b>" not in html


def test_the_item_page_steps_through_the_list_it_came_from(curator, project) -> None:  # type: ignore[no-untyped-def]
    b, a, c = (ItemFactory(project=project, source=source) for source in ("b", "a", "c"))
    ItemFactory(project=project, source="zz-filtered-out", response_a="yes", response_b="no")
    url = reverse("annotate:item_detail", args=[project.pk, b.pk])
    response = curator.get(url, {"sort": "source", "q": "answer", "source": ""})
    assert response.context["previous_url"] == reverse("annotate:item_detail", args=[project.pk, a.pk]) + (
        "?q=answer&sort=source"
    )
    assert response.context["next_url"] == reverse("annotate:item_detail", args=[project.pk, c.pk]) + (
        "?q=answer&sort=source"
    )
    last = curator.get(reverse("annotate:item_detail", args=[project.pk, c.pk]), {"sort": "source", "q": "answer"})
    assert last.context["next_url"] == ""
    assert f'href="/projects/{project.pk}/items/?q=answer&amp;sort=source"' in last.content.decode()


def test_the_item_page_shows_the_decision_history(curator, project) -> None:  # type: ignore[no-untyped-def]
    item = ItemFactory(project=project)
    decider = member(project, Role.CURATOR, username="decider")
    adjudication_record(item=item, curator=decider, decision="more", reason="too close to call", more=1)
    adjudication_record(item=item, curator=decider, decision="exclude", reason="prompt is broken")
    html = curator.get(reverse("annotate:item_detail", args=[project.pk, item.pk])).content.decode()
    history = html[html.index('data-testid="decision-history"') :]
    assert history.index("prompt is broken") < history.index("too close to call"), "newest first"
    assert "decider" in history
    assert reverse("curation:adjudicate", args=[project.pk, item.pk]) in html


def test_the_gold_form_preselects_no_answer(curator, project) -> None:  # type: ignore[no-untyped-def]
    item = ItemFactory(project=project)
    html = curator.get(reverse("annotate:item_detail", args=[project.pk, item.pk])).content.decode()
    form = html[html.index('data-testid="gold-form"') :]
    assert form.count('name="preference_sign"') == 3
    assert "checked" not in form
    assert "selected" not in form


def test_a_gold_save_keeps_the_list_query(curator, project) -> None:  # type: ignore[no-untyped-def]
    item = ItemFactory(project=project)
    url = reverse("annotate:item_detail", args=[project.pk, item.pk]) + "?gold=0&sort=-number"
    response = curator.post(url, {"preference_sign": 1, "ratings": "", "note": ""})
    assert response.status_code == 302
    assert response.url.endswith("?gold=0&sort=-number")


def test_the_item_page_shows_model_scores_and_the_synergy_decision(curator, project) -> None:  # type: ignore[no-untyped-def]
    from tests.training.conftest import frozen_version
    from tests.training.test_campaign_pages import decide, decided_round, make_campaign
    from tests.training.test_runs import make_model, make_run
    from training.models import ItemScore

    item = ItemFactory(project=project)
    model = make_model(make_run(project, frozen_version(project, count=2), status="succeeded"), is_active=True)
    ItemScore.objects.create(
        item=item, reward_model=model, reward_a=0.25, reward_b=1.5, margin=1.25, probability_b=0.78, ensemble_std=0.125
    )
    decide(decided_round(make_campaign(project, name="spring"), number=2), item, "flip", -1.5, override="accept")
    html = curator.get(reverse("annotate:item_detail", args=[project.pk, item.pk])).content.decode()
    scores = html[html.index('data-testid="model-scores"') : html.index('data-testid="synergy-decision"')]
    for shown in ("0.250", "1.500", "1.250", "0.78", "0.125"):
        assert shown in scores
    synergy = html[html.index('data-testid="synergy-decision"') : html.index('data-testid="decision-history"')]
    assert "spring, round 2" in synergy
    assert "accept" in synergy
    assert "override of flip" in synergy


def test_only_curators_of_the_project_see_the_pages(login, project) -> None:  # type: ignore[no-untyped-def]
    item = ItemFactory(project=project)
    annotator = login(member(project))
    assert annotator.get(reverse("annotate:item_list", args=[project.pk]), {"q": "x"}).status_code == 403
    outsider = login(member(ProjectFactory(), Role.CURATOR))
    assert outsider.get(reverse("annotate:item_list", args=[project.pk])).status_code == 404
    assert outsider.get(reverse("annotate:item_detail", args=[project.pk, item.pk])).status_code == 404


def test_an_item_short_of_annotations_is_listed_in_progress(curator, project) -> None:  # type: ignore[no-untyped-def]
    item = ItemFactory(project=project)
    AnnotationFactory(item=item, strength=1)  # one of the project's two
    assert listed(curator, project, state="in progress") == [item.pk]
    html = curator.get(reverse("annotate:item_list", args=[project.pk])).content.decode()
    assert "1 / 2" in html
    assert "in progress" in html
