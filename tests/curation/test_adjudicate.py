"""The adjudication form over HTTP: final ratings from button rows, errors beside their fields and summed up at the
form's top, and a decision that opens the next item of the queue under the filters the curator came with."""

import re
from urllib.parse import urlencode

import pytest
from django.urls import reverse

from annotate.labels import DEFAULT_SCHEMA
from annotate.models import Item, Role
from curation.models import Adjudication
from curation.selectors_review import disagreement_queue
from curation.selectors_review_next import QueueFilters, QueuePosition, review_queue_next
from tests.annotate.factories import AnnotationFactory, ItemFactory, ProjectFactory, member

pytestmark = pytest.mark.django_db

RATED_SCHEMA = {**DEFAULT_SCHEMA, "spans": {"enabled": False, "categories": [], "missing": []}}


def adjudicate_url(item, **query) -> str:  # type: ignore[no-untyped-def]
    url = reverse("curation:adjudicate", args=[item.project_id, item.pk])
    return f"{url}?{urlencode(query)}" if query else url


def split(item, annotators, strengths=(-2, 2)) -> None:  # type: ignore[no-untyped-def]
    for annotator, strength in zip(annotators, strengths, strict=True):
        AnnotationFactory(item=item, annotator=annotator, strength=strength)


def first_error_after(page: str, marker: str) -> str:
    """The first field error that follows `marker` in the page: the one shown beside that field."""
    at = page.index(marker)
    found = re.search(r'class="field-error">([^<]*)<', page[at:])
    assert found, f"no error after {marker}"
    return found.group(1)


def summary(page: str) -> list[tuple[str, str]]:
    """The error summary's entries: (where each links to, its text)."""
    box = re.search(r'<div class="error-summary".*?</div>', page, re.S)
    assert box, "no error summary"
    return re.findall(r'<li><a href="#([^"]+)">([^<]*)</a></li>', box.group(0))


@pytest.fixture
def rated():  # type: ignore[no-untyped-def]
    """A project asking for a preference and HelpSteer2's ratings, a split item in it, and its curator."""
    project = ProjectFactory(overlap=2, schema=RATED_SCHEMA)
    item = ItemFactory(project=project)
    split(item, [member(project), member(project)])
    return project, item, member(project, Role.CURATOR)


def test_final_ratings_are_button_rows_not_json(login, rated) -> None:  # type: ignore[no-untyped-def]
    _, item, curator = rated
    page = login(curator).get(adjudicate_url(item)).content.decode()
    for side in "ab":
        values = re.findall(rf'<input type="radio" name="rating-{side}-helpfulness" value="(\d+)"', page)
        assert values == ["0", "1", "2", "3", "4"]
    assert 'name="ratings"' not in page.replace('type="hidden" name="ratings"', "")
    assert "JSON" not in page


def test_ratings_posted_from_the_button_rows_are_stored(login, rated) -> None:  # type: ignore[no-untyped-def]
    _, item, curator = rated
    data = {
        "decision": "label",
        "strength": "1",
        "reason": "B is right.",
        "rating-a-helpfulness": "1",
        "rating-b-helpfulness": "4",
        "rating-b-correctness": "0",
    }
    response = login(curator).post(adjudicate_url(item), data)
    assert response.status_code == 302
    decision = Adjudication.objects.get(item=item)
    assert decision.ratings == {"a": {"helpfulness": 1}, "b": {"helpfulness": 4, "correctness": 0}}
    assert decision.strength == 1


def test_ratings_go_only_with_a_final_label(login, rated) -> None:  # type: ignore[no-untyped-def]
    _, item, curator = rated
    data = {"decision": "ambiguous", "reason": "Both fine.", "rating-a-helpfulness": "3", "strength": "2"}
    assert login(curator).post(adjudicate_url(item), data).status_code == 302
    decision = Adjudication.objects.get(item=item)
    assert (decision.decision, decision.ratings, decision.strength) == ("ambiguous", {}, None)


def test_a_rating_off_the_scale_is_shown_beside_its_row_and_in_the_summary(login, rated) -> None:  # type: ignore[no-untyped-def]
    _, item, curator = rated
    data = {"decision": "label", "strength": "1", "reason": "x", "rating-b-helpfulness": "9"}
    response = login(curator).post(adjudicate_url(item), data)
    assert response.status_code == 422
    page = response.content.decode()
    message = "must be an integer from 0 to 4, got 9"
    assert first_error_after(page, 'data-testid="final-rating-helpfulness"') == f"B: {message}"
    assert summary(page) == [("id_rating-b-helpfulness", f"Helpfulness of B: {message}")]
    assert 'class="rating-row has-error"' in page
    # The rows keep what was posted.
    assert 'name="rating-b-helpfulness" value="4"' in page
    assert not Adjudication.objects.exists()


@pytest.mark.parametrize(
    ("data", "marker", "anchor", "message"),
    [
        (
            {"decision": "label", "strength": "5", "reason": "x"},
            'id="id_strength"',
            "id_strength",
            "must be an integer from -3 to 3, got 5",
        ),
        ({"decision": "label", "reason": "x"}, 'id="id_strength"', "id_strength", "choose the final label"),
        (
            {"decision": "label", "strength": "1", "reason": "  "},
            'id="id_reason"',
            "id_reason",
            "say why (it is kept with the decision)",
        ),
        ({"decision": "more", "more": "0", "reason": "x"}, 'id="id_more"', "id_more", "greater than or equal to 1"),
        ({"reason": "x"}, 'id="decision"', "decision", "This field is required."),
    ],
)
def test_each_error_is_shown_beside_its_field_and_in_the_summary(login, rated, data, marker, anchor, message) -> None:  # type: ignore[no-untyped-def]
    _, item, curator = rated
    response = login(curator).post(adjudicate_url(item), data)
    assert response.status_code == 422
    page = response.content.decode()
    assert message in first_error_after(page, marker)
    [(linked, text)] = summary(page)
    assert linked == anchor
    assert message in text
    assert not Adjudication.objects.exists()
    item.refresh_from_db()
    assert item.extra_overlap == 0


def test_the_summary_opens_the_form_and_lists_every_problem_in_its_order(login, rated) -> None:  # type: ignore[no-untyped-def]
    _, item, curator = rated
    data = {"decision": "label", "reason": "", "rating-a-coherence": "7"}
    page = login(curator).post(adjudicate_url(item), data).content.decode()
    form = page[page.index('data-testid="decision-form"') :]
    # Right at the form's top, before its first field, and focusable (adjudicate.js moves focus there).
    assert form.index('class="error-summary"') < form.index('id="decision"')
    assert re.search(r'<div class="error-summary" role="alert" tabindex="-1"', page)
    assert "Not recorded: 3 problems." in page
    assert [anchor for anchor, _ in summary(page)] == ["id_strength", "id_rating-a-coherence", "id_reason"]


def test_a_project_without_a_preference_asks_for_ratings_at_the_ratings(login) -> None:  # type: ignore[no-untyped-def]
    schema = {**RATED_SCHEMA, "preference": {**RATED_SCHEMA["preference"], "enabled": False}}
    project = ProjectFactory(overlap=2, schema=schema)
    item = ItemFactory(project=project)
    for helpfulness in (0, 4):
        AnnotationFactory(
            item=item, annotator=member(project), strength=None, ratings={"a": {"helpfulness": helpfulness}}
        )
    client = login(member(project, Role.CURATOR))
    response = client.post(adjudicate_url(item), {"decision": "label", "reason": "x"})
    assert response.status_code == 422
    page = response.content.decode()
    assert 'id="id_strength"' not in page
    message = "give the final ratings (this project asks for no preference)"
    assert first_error_after(page, 'id="final-ratings"') == message
    assert summary(page) == [("final-ratings", f"Final ratings: {message}")]
    response = client.post(adjudicate_url(item), {"decision": "label", "reason": "x", "rating-a-helpfulness": "2"})
    assert response.status_code == 302
    assert Adjudication.objects.get(item=item).ratings == {"a": {"helpfulness": 2}}


@pytest.fixture
def queue():  # type: ignore[no-untyped-def]
    """Five disputed items: three from source "web" (the first two equally severe), two from "chat"."""
    project = ProjectFactory(overlap=2)
    annotators = [member(project), member(project)]
    web = [ItemFactory(project=project, source="web") for _ in range(3)]
    chat = [ItemFactory(project=project, source="chat") for _ in range(2)]
    for item in [web[0], web[1], chat[0]]:
        split(item, annotators, (-3, 3))
    for item in [web[2], chat[1]]:
        split(item, annotators, (-1, 1))
    return project, web, chat, member(project, Role.CURATOR)


def queue_order(project, **filters) -> list[int]:  # type: ignore[no-untyped-def]
    return list(disagreement_queue(project=project, **filters).values_list("id", flat=True))


def test_the_queue_links_to_each_item_with_its_filters(login, queue) -> None:  # type: ignore[no-untyped-def]
    project, web, _, curator = queue
    url = reverse("curation:review_queue", args=[project.pk]) + "?reason=sign&source=web"
    page = login(curator).get(url).content.decode()
    assert f'href="{adjudicate_url(web[0])}?reason=sign&amp;source=web"' in page


def test_a_decision_opens_the_next_item_under_the_same_filters(login, queue) -> None:  # type: ignore[no-untyped-def]
    project, web, _, curator = queue
    assert queue_order(project, source="web") == [web[0].pk, web[1].pk, web[2].pk]
    client = login(curator)
    decide = {"decision": "exclude", "reason": "Broken."}
    response = client.post(adjudicate_url(web[0], source="web", page="1"), decide)
    assert response.status_code == 302
    assert response["Location"] == adjudicate_url(web[1], source="web", decided=web[0].pk)
    # The next item says which was just decided, with the way back to it and to the queue as it was left.
    page = client.get(response["Location"]).content.decode()
    assert f'<a href="{adjudicate_url(web[0], source="web")}">item {web[0].number}</a>' in page
    assert f'href="{reverse("curation:review_queue", args=[project.pk])}?source=web"' in page
    # Past the other source's item, which is as severe as web[2] and would come first unfiltered.
    response = client.post(adjudicate_url(web[1], source="web"), decide)
    assert response["Location"] == adjudicate_url(web[2], source="web", decided=web[1].pk)


def test_the_next_item_follows_the_decided_one_not_the_top_of_the_queue(login, queue) -> None:  # type: ignore[no-untyped-def]
    project, web, chat, curator = queue
    order = queue_order(project)
    assert order == [web[0].pk, web[1].pk, chat[0].pk, web[2].pk, chat[1].pk]
    response = login(curator).post(adjudicate_url(chat[0]), {"decision": "ambiguous", "reason": "Unclear."})
    assert response["Location"] == adjudicate_url(web[2], decided=chat[0].pk)


def test_after_the_last_item_the_queue_opens_with_its_filters(login, queue) -> None:  # type: ignore[no-untyped-def]
    project, web, _, curator = queue
    response = login(curator).post(
        adjudicate_url(web[2], reason="sign", source="web", page="2"), {"decision": "exclude", "reason": "Broken."}
    )
    assert response.status_code == 302
    query = urlencode({"reason": "sign", "source": "web", "page": "2"})
    assert response["Location"] == reverse("curation:review_queue", args=[project.pk]) + f"?{query}"


def test_a_refused_decision_stays_on_the_item(login, queue) -> None:  # type: ignore[no-untyped-def]
    _, web, _, curator = queue
    response = login(curator).post(adjudicate_url(web[0], source="web"), {"decision": "exclude", "reason": ""})
    assert response.status_code == 422
    assert f"Adjudicate item {web[0].number}" in response.content.decode()


def test_only_an_item_of_the_project_is_named_as_just_decided(login, queue) -> None:  # type: ignore[no-untyped-def]
    _, web, _, curator = queue
    foreign = ItemFactory()
    page = login(curator).get(adjudicate_url(web[1], decided=foreign.pk)).content.decode()
    assert 'data-testid="decided"' not in page
    page = login(curator).get(adjudicate_url(web[1], decided=f"{web[0].pk}x")).content.decode()
    assert 'data-testid="decided"' not in page


def test_the_next_item_link_skips_without_deciding(login, queue) -> None:  # type: ignore[no-untyped-def]
    _, web, _, curator = queue
    page = login(curator).get(adjudicate_url(web[0], source="web")).content.decode()
    assert f'href="{adjudicate_url(web[1], source="web")}" data-testid="next-item"' in page


def test_next_follows_the_queue_order_through_ties_and_from_outside_it(queue) -> None:  # type: ignore[no-untyped-def]
    project, _, chat, _ = queue
    # A tie in severity broken by the annotation count: a third annotation on chat[1] (still split) puts it first
    # among the least severe.
    AnnotationFactory(item=chat[1], annotator=member(project), strength=-1)
    order = queue_order(project)
    filters = QueueFilters()
    for here, following in zip(order, [*order[1:], None], strict=True):
        position = QueuePosition.of(Item.objects.get(pk=here))
        assert review_queue_next(project=project, after=position, filters=filters) == following
    outside = ItemFactory(project=project)
    assert review_queue_next(project=project, after=QueuePosition.of(outside), filters=filters) == order[0]
