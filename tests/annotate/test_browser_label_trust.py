"""The labeling page in a real browser, on the points where annotators stopped trusting it: keys do what the
hints say, Back/Forward and stale copies never offer or overwrite an answer already given, a reload keeps work in
progress, and each item starts at its top with the turn being answered in view.

Runs Debian's Chromium against pytest-django's live server and the real PostgreSQL, as test_browser.py does.
"""

import uuid
from collections.abc import Iterator

import pytest
from django.urls import reverse
from playwright.sync_api import Browser, Dialog, Locator, Page, expect

from annotate.labels import DEFAULT_SCHEMA, Labels
from annotate.models import Annotation
from annotate.services.labeling import annotation_submit
from tests.annotate.factories import ItemFactory, ProjectFactory, member
from tests.annotate.test_browser_fine import _drag_over
from tests.annotate.test_labeling import item_number
from tests.browser import CHROMIUM, CHROMIUM_ARGS, fresh_page, log_in
from tests.waits import HANG_GUARD_MS

RATINGS_A = {"helpfulness": 4, "correctness": 3, "coherence": 4, "complexity": 1, "verbosity": 2}
# B's verbosity is 1, so that a `2` meant as "A is better" but taken as a rating would show.
RATINGS_B = {"helpfulness": 1, "correctness": 0, "coherence": 3, "complexity": 1, "verbosity": 1}
RESPONSE_A = "Paris is the capital of France. It is also famous for its many cheeses."
DRAFT_KEYS = "Object.keys(localStorage).filter(key => key.startsWith('concord-draft:'))"
# Notes a page restored from the back/forward cache; sessionStorage outlives the reload that may follow.
NOTE_RESTORE = "addEventListener('pageshow', e => { if (e.persisted) sessionStorage.setItem('restored', '1'); });"
# Playwright turns the back/forward cache off; Chromium keeps no-store pages out of it unless this feature is on,
# and at this level evicts them only when an HttpOnly cookie (the session) changes, not the CSRF cookie that
# Django sends again with every page.
NO_STORE_IN_BFCACHE = (
    "--enable-features=CacheControlNoStoreEnterBackForwardCache:level/restore-unless-http-only-cookie-change"
)
CARD_TOP = "document.getElementById('item-card').getBoundingClientRect().top"

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def bfcache_browser(browser: Browser) -> Iterator[Browser]:
    """Chromium with its back/forward cache on, as people have it, and letting in pages sent with Cache-Control:
    no-store (the label page), as Firefox and Safari do. Launched by the Playwright that runs `browser`: one per
    thread."""
    cached = browser.browser_type.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=[*CHROMIUM_ARGS, NO_STORE_IN_BFCACHE],
        ignore_default_args=["--disable-back-forward-cache"],
        timeout=HANG_GUARD_MS,
    )
    yield cached
    cached.close()


@pytest.fixture
def bfcache_page(bfcache_browser: Browser) -> Iterator[Page]:
    with fresh_page(bfcache_browser) as page:
        yield page


def _open_label_page(page: Page, base_url: str, project_id: int) -> str:
    """Open the labeling page; returns the id of the item it shows."""
    page.goto(base_url + reverse("annotate:label", args=[project_id]))
    # The shortcuts come from deferred scripts, which have run once the load event fires.
    page.wait_for_load_state("load")
    return _item_id(page)


def _item_id(page: Page) -> str:
    item_id = _card(page).get_attribute("data-item-id")
    assert item_id is not None
    return item_id


def _card(page: Page) -> Locator:
    return page.locator("#item-card [data-item-id]")


def _accept_dialogs(page: Page) -> list[str]:
    """Accept every dialog (so the page is left when it asks), recording the type of each."""
    seen: list[str] = []

    def accept(dialog: Dialog) -> None:
        seen.append(dialog.type)
        dialog.accept()

    page.on("dialog", accept)
    return seen


def _rating(page: Page, side: str, name: str, value: int) -> Locator:
    return page.locator(f'input[name="rating-{side}-{name}"][value="{value}"]')


def _click_rating(page: Page, side: str, name: str, value: int) -> None:
    """Rate with the mouse: the radio itself is hidden, its label is what people click."""
    page.locator("label.rating-option", has=_rating(page, side, name, value)).click()


def _strength(page: Page, key: str) -> Locator:
    return page.locator(f'.strength-option[data-key="{key}"] input')


def _expect_ratings(page: Page) -> None:
    for side, expected in (("a", RATINGS_A), ("b", RATINGS_B)):
        for name, value in expected.items():
            expect(_rating(page, side, name, value)).to_be_checked()


def _expect_rating_mode_off(page: Page, *, focus_on_page: bool = True) -> None:
    expect(page.locator(".rating-row.is-rating")).to_have_count(0)
    for side in ("a", "b"):
        expect(page.locator(f'.rating-hint[data-side="{side}"]')).to_have_text("r, then a digit per row")
    expect(page.locator(".strength-hint")).to_have_text("keys 1–7")
    if focus_on_page:
        assert page.evaluate("document.activeElement === document.body"), "focus was not released"


# 1. Rating by keyboard is a mode, and it ends.


def test_digits_pick_the_preference_again_once_the_last_row_is_rated(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1, schema=DEFAULT_SCHEMA)
    item = ItemFactory(project=project)
    annotator = member(project)
    log_in(page, live_server.url, annotator)
    _open_label_page(page, live_server.url, project.pk)

    page.keyboard.press("r")
    for value in [*RATINGS_A.values(), *RATINGS_B.values()]:
        page.keyboard.press(str(value))
    _expect_ratings(page)
    page.keyboard.press("2")  # "A is better", as the strength buttons say
    expect(_strength(page, "2")).to_be_checked()
    expect(_rating(page, "b", "verbosity", 1)).to_be_checked()
    page.keyboard.press("Enter")
    expect(page.get_by_test_id("queue-empty")).to_be_visible()

    annotation = Annotation.objects.get(item=item, annotator=annotator)
    assert annotation.strength == -2
    assert annotation.ratings == {"a": RATINGS_A, "b": RATINGS_B}


def _label_an_item_with_ratings(page: Page, base_url: str) -> None:
    """An annotator on the labeling page of a project that asks for HelpSteer2's ratings."""
    project = ProjectFactory(overlap=1, schema=DEFAULT_SCHEMA)
    ItemFactory(project=project)
    log_in(page, base_url, member(project))
    _open_label_page(page, base_url, project.pk)


def test_escape_and_a_mouse_click_leave_digits_to_the_preference(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    _label_an_item_with_ratings(page, live_server.url)

    page.keyboard.press("r")
    page.keyboard.press("4")
    page.keyboard.press("3")
    page.keyboard.press("Escape")
    page.keyboard.press("5")
    expect(_strength(page, "5")).to_be_checked()
    expect(page.locator('input[name="rating-a-coherence"]:checked')).to_have_count(0)
    _expect_rating_mode_off(page, focus_on_page=False)

    # A rating clicked with the mouse does not take the next digit either.
    _click_rating(page, "a", "coherence", 2)
    expect(_rating(page, "a", "coherence", 2)).to_be_checked()
    page.keyboard.press("3")
    expect(_strength(page, "3")).to_be_checked()
    expect(_rating(page, "a", "coherence", 2)).to_be_checked()
    expect(page.locator('input[name="rating-a-complexity"]:checked')).to_have_count(0)


def test_rating_mode_shows_which_row_the_digits_rate(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    _label_an_item_with_ratings(page, live_server.url)

    page.keyboard.press("r")
    expect(page.locator(".rating-row.is-rating")).to_have_count(1)
    expect(page.locator('.rating-row:has(input[name="rating-a-helpfulness"])')).to_contain_class("is-rating")
    expect(page.locator('.rating-hint[data-side="a"]')).to_have_text("digits rate Helpfulness of A · Esc to leave")
    expect(page.locator(".strength-hint")).to_have_text("keys 1–7 after Esc")
    for value in RATINGS_A.values():
        page.keyboard.press(str(value))
    expect(page.locator('.rating-row:has(input[name="rating-b-helpfulness"])')).to_contain_class("is-rating")
    expect(page.locator('.rating-hint[data-side="a"]')).to_have_text("r, then a digit per row")
    expect(page.locator('.rating-hint[data-side="b"]')).to_have_text("digits rate Helpfulness of B · Esc to leave")
    page.keyboard.press("Escape")
    _expect_rating_mode_off(page)


# 2. Back/Forward and stale copies.


@pytest.mark.parametrize("cache", ["no back/forward cache", "back/forward cache"])
def test_back_and_forward_after_a_submit_never_offer_the_answered_item_again(live_server, request, cache) -> None:  # type: ignore[no-untyped-def]
    page: Page = request.getfixturevalue("page" if cache == "no back/forward cache" else "bfcache_page")
    project = ProjectFactory(overlap=1)
    ItemFactory.create_batch(3, project=project)
    annotator = member(project)
    log_in(page, live_server.url, annotator)
    queue = live_server.url + reverse("annotate:project_queue", args=[project.pk])
    page.goto(queue)
    page.get_by_role("link", name="Start labeling").click()
    page.wait_for_url("**/label/")
    page.wait_for_load_state("load")
    answered = _item_id(page)

    page.keyboard.press("1")
    page.keyboard.press("Control+Enter")
    expect(_card(page)).not_to_have_attribute("data-item-id", answered)
    # "commit": a page restored from the back/forward cache fires no load event.
    page.go_back(wait_until="commit")
    page.wait_for_url(queue, wait_until="commit")
    page.go_forward(wait_until="commit")
    page.wait_for_url("**/label/", wait_until="commit")

    expect(_card(page)).to_be_visible()
    expect(_card(page)).not_to_have_attribute("data-item-id", answered)
    annotation = Annotation.objects.get(annotator=annotator)
    assert (annotation.item_id, annotation.strength) == (int(answered), -3)


def test_a_page_restored_from_the_back_forward_cache_shows_the_current_item(live_server, bfcache_page: Page) -> None:  # type: ignore[no-untyped-def]
    page = bfcache_page
    page.add_init_script(NOTE_RESTORE)
    project = ProjectFactory(overlap=1)
    first, _ = ItemFactory.create_batch(2, project=project)
    annotator = member(project)
    log_in(page, live_server.url, annotator)
    assert _open_label_page(page, live_server.url, project.pk) == str(first.pk)
    page.goto("about:blank")

    # Meanwhile the item is answered elsewhere (another device), so this browser's cookies stay as they were;
    # Chromium would not restore a no-store page after a cookie change.
    annotation_submit(
        item=first, annotator=annotator, labels=Labels(strength=-3), seconds_spent=5, submission_uuid=uuid.uuid4()
    )

    page.go_back(wait_until="commit")
    expect(_card(page)).not_to_have_attribute("data-item-id", str(first.pk))
    assert page.evaluate("sessionStorage.getItem('restored')") == "1", "Back did not use the back/forward cache"
    assert Annotation.objects.get(annotator=annotator).strength == -3


def test_a_stale_copy_of_an_answered_item_is_refused_with_a_warning(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    ItemFactory.create_batch(2, project=project)
    annotator = member(project)
    log_in(page, live_server.url, annotator)
    answered = _open_label_page(page, live_server.url, project.pk)
    stale = page.context.new_page()
    assert _open_label_page(stale, live_server.url, project.pk) == answered

    page.keyboard.press("1")
    page.keyboard.press("Control+Enter")
    expect(page.get_by_test_id("notice")).to_have_text("Saved.")

    # The copy still offers the item; labelling it again is refused, and says so.
    stale.keyboard.press("7")
    stale.keyboard.press("j")
    stale.keyboard.type("Changed my mind.")
    stale.keyboard.press("Control+Enter")
    notice = stale.get_by_test_id("notice")
    expect(notice).to_contain_text(f"Not saved: you already answered item {item_number(answered)}")
    expect(notice).to_contain_text("Your first answer stands")
    expect(notice).to_contain_class("warning")
    expect(_card(stale)).not_to_have_attribute("data-item-id", answered)
    assert stale.evaluate(DRAFT_KEYS) == [], "the refused answer's draft was kept"

    annotation = Annotation.objects.get(annotator=annotator)
    assert (annotation.item_id, annotation.strength, annotation.justification) == (int(answered), -3, "")


# 3. Work in progress survives a reload.


def _fill_everything(page: Page) -> None:
    for side, ratings in (("a", RATINGS_A), ("b", RATINGS_B)):
        for name, value in ratings.items():
            _click_rating(page, side, name, value)
    page.locator('.strength-option[data-key="6"]').click()
    page.locator('.response[data-side="b"]').get_by_label("Missing major").check()
    page.locator("#justification").fill("B says more, and says it well.")
    _drag_over(page, "a", "famous for its many cheeses")
    page.locator(".span-popover .span-category", has_text="Irrelevant").click()
    expect(page.get_by_test_id("spans-a").locator(".span-item")).to_have_count(1)


def test_a_reload_keeps_work_in_progress_until_the_item_is_submitted(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1, schema=DEFAULT_SCHEMA)
    item = ItemFactory(project=project, response_a=RESPONSE_A)
    annotator = member(project)
    log_in(page, live_server.url, annotator)
    item_id = _open_label_page(page, live_server.url, project.pk)
    _fill_everything(page)

    _accept_dialogs(page)
    page.reload()
    page.wait_for_load_state("load")
    expect(_card(page)).to_have_attribute("data-item-id", item_id)
    _expect_ratings(page)
    expect(_strength(page, "6")).to_be_checked()
    expect(page.locator('.response[data-side="b"]').get_by_label("Missing major")).to_be_checked()
    expect(page.locator("#justification")).to_have_value("B says more, and says it well.")
    mark = page.locator('[data-testid="response-a"] mark.span-mark[data-category="irrelevant"]')
    expect(mark).to_have_text("famous for its many cheeses")
    expect(page.get_by_test_id("spans-a").locator(".span-item")).to_have_count(1)
    assert len(page.evaluate(DRAFT_KEYS)) == 1

    page.keyboard.press("Control+Enter")
    expect(page.get_by_test_id("queue-empty")).to_be_visible()
    assert page.evaluate(DRAFT_KEYS) == [], "the draft outlived the submit"
    annotation = Annotation.objects.get(item=item, annotator=annotator)
    assert annotation.strength == 2
    assert annotation.ratings == {"a": RATINGS_A, "b": RATINGS_B}
    assert annotation.justification == "B says more, and says it well."
    assert [(s["response"], s["category"], s["text"]) for s in annotation.spans] == [
        ("a", "irrelevant", "famous for its many cheeses")
    ]
    assert annotation.missing == [{"response": "b", "category": "missing_major"}]


def test_logging_out_leaves_no_draft_behind(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    """On a shared computer the next person must not find the last one's half-written justification."""
    project = ProjectFactory(overlap=1)
    ItemFactory(project=project)
    log_in(page, live_server.url, member(project))
    _open_label_page(page, live_server.url, project.pk)
    page.keyboard.press("1")
    page.locator("#justification").fill("A, but only just.")
    assert len(page.evaluate(DRAFT_KEYS)) == 1
    _accept_dialogs(page)
    page.get_by_role("button", name="Log out").click()
    page.wait_for_load_state("load")
    assert page.evaluate(DRAFT_KEYS) == []


def test_leaving_with_unsaved_changes_asks_first_but_not_after_a_submit(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    project = ProjectFactory(overlap=1)
    ItemFactory.create_batch(2, project=project)
    log_in(page, live_server.url, member(project))
    queue = live_server.url + reverse("annotate:project_queue", args=[project.pk])
    dialogs = _accept_dialogs(page)

    _open_label_page(page, live_server.url, project.pk)
    page.keyboard.press("1")
    page.keyboard.press("Control+Enter")
    expect(page.get_by_test_id("notice")).to_have_text("Saved.")
    page.goto(queue)
    assert dialogs == [], "asked before leaving although everything was saved"

    _open_label_page(page, live_server.url, project.pk)
    page.keyboard.press("3")
    expect(_strength(page, "3")).to_be_checked()
    page.goto(queue)
    assert dialogs == ["beforeunload"]


# 4. Each item starts at its top, with the turn being answered in view.


def test_a_long_conversation_shows_the_turn_being_answered_and_folds_the_earlier_ones(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    prompt = [{"role": "system", "content": "You are a helpful assistant."}] + [
        {"role": "user" if n % 2 else "assistant", "content": f"Turn {n}: <i>said</i> at some length.\nAnd more."}
        for n in range(1, 50)
    ]
    project = ProjectFactory(overlap=1)
    ItemFactory(project=project, prompt=prompt)
    log_in(page, live_server.url, member(project))
    _open_label_page(page, live_server.url, project.pk)

    conversation = page.get_by_label("Prompt")
    expect(conversation.locator(".turn", has_text="Turn 49:")).to_be_in_viewport(ratio=1)
    expect(conversation.locator(".turn", has_text="Turn 48:")).to_be_in_viewport(ratio=1)
    earlier = conversation.locator("details.earlier-turns")
    expect(earlier.locator("summary")).to_have_text("Show 48 earlier turns")
    expect(conversation.locator(".turn", has_text="Turn 47:")).to_be_hidden()

    earlier.locator("summary").click()
    expect(conversation.locator(".turn", has_text="Turn 1:")).to_be_visible()
    expect(conversation.locator(".turn", has_text="You are a helpful assistant.")).to_be_visible()
    expect(conversation.locator(".turn", has_text="Turn 1:")).to_contain_text("<i>said</i>")
    assert conversation.locator("i").count() == 0


def test_the_next_item_starts_at_its_top(live_server, page: Page) -> None:  # type: ignore[no-untyped-def]
    long = "\n".join(f"Line {n} of a long answer." for n in range(80))
    project = ProjectFactory(overlap=1)
    ItemFactory.create_batch(2, project=project, response_a=long, response_b=long)
    log_in(page, live_server.url, member(project))
    page.set_viewport_size({"width": 1280, "height": 600})
    answered = _open_label_page(page, live_server.url, project.pk)
    page.evaluate("window.scrollTo(0, document.documentElement.scrollHeight)")
    assert page.evaluate(CARD_TOP) < -200, "the page is too short for this test to mean anything"

    page.keyboard.press("4")
    page.keyboard.press("Enter")
    expect(_card(page)).not_to_have_attribute("data-item-id", answered)
    expect(page.locator("#item-card .label-status")).to_be_in_viewport()
    assert abs(page.evaluate(CARD_TOP)) <= 1, "the card's top should be at the top of the window"
