"""The XSS corpus (tests/security/xss_payloads.py) in every user- or model-controlled text field of a world
(tests/security/world.py), and every page that shows them loaded in Chromium: no payload runs (each one's script
calls a hook this test installs; a dialog fails the test too), none leaves an element or attribute of its own in
the DOM, and every payload is shown, as typed, on at least one page. Issue 12's "Keep it closed"."""

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse
from playwright.sync_api import Browser, Page

from annotate.models import Role
from curation.models import ProjectQuality
from curation.services.quality import project_quality_refresh, project_quality_request
from tests.browser import fresh_page
from tests.security.world import ProjectWorld, World, build_world
from tests.security.xss_payloads import MARKER_PREFIX, PAYLOADS, PayloadFeed

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# Read through Element.prototype: a form's `attributes` or `tagName` can be a field of that name (the training
# form has one called "attributes"), and so can be what a payload clobbers.
DOM_READERS = """
const tagOf = (element) => Object.getOwnPropertyDescriptor(Element.prototype, "tagName").get.call(element);
const attributesOf = (element) => Element.prototype.getAttributeNames.call(element).map(
  (name) => [name.toLowerCase(), Element.prototype.getAttribute.call(element, name)]);
"""

# Installed before any of a page's own script: the hook every payload's script calls, and a record of what the
# Content-Security-Policy refused that came from a payload.
HOOK = (
    f"const xssMarkerPrefix = {json.dumps(MARKER_PREFIX)};"
    + """
window.__xss = (marker) => window.__xssReport(String(marker));
document.addEventListener("securitypolicyviolation", (event) => {
  const said = `${event.violatedDirective} ${event.blockedURI} ${event.sample}`;
  if (said.includes(xssMarkerPrefix) || said.includes("__xss")) window.__xssReport("CSP refused: " + said);
});
"""
)

# Elements and attributes a payload would have put there (called with the marker prefix): the app's templates
# make none of them.
INJECTED = (
    "(prefix) => {"
    + DOM_READERS
    + """
  const marked = new RegExp(prefix + "[0-9][0-9]", "i");
  const badScheme = /^(javascript|data|vbscript):/i;
  const urlAttributes = new Set(["href", "src", "action", "formaction", "xlink:href", "data", "srcdoc",
                                 "background", "poster", "ping"]);
  const neverRendered = new Set(["IFRAME", "FRAME", "FRAMESET", "OBJECT", "EMBED", "APPLET", "BASE", "PORTAL"]);
  const found = [];
  for (const element of document.querySelectorAll("*")) {
    const tag = tagOf(element);
    if (neverRendered.has(tag)) found.push(`a <${tag.toLowerCase()}> element`);
    if (tag === "META" && Element.prototype.hasAttribute.call(element, "http-equiv")) found.push("a <meta http-equiv>");
    if (tag === "SCRIPT") {
      const src = Element.prototype.getAttribute.call(element, "src");
      const url = src === null ? null : new URL(src, location.href);
      const ours = url !== null && url.origin === location.origin && url.pathname.startsWith("/static/");
      if (!ours) found.push(`a <script> not from /static/: ${src || element.textContent.slice(0, 80)}`);
    }
    for (const [name, value] of attributesOf(element)) {
      const active = name.startsWith("on") || name.startsWith("hx-") || name.startsWith("data-hx-")
        || ["id", "name", "style", "srcdoc"].includes(name);
      const url = urlAttributes.has(name) && badScheme.test(value.replace(/[\\u0000-\\u0020\\u200b]/g, ""));
      if (marked.test(name) || (active && marked.test(value)) || url) {
        found.push(`<${tag.toLowerCase()} ${name}="${value.slice(0, 100)}">`);
      }
    }
  }
  return found;
}
"""
)

# What the page shows as text: its text nodes, attribute values (titles, inputs' values) and form fields' values.
SHOWN = (
    "() => {"
    + DOM_READERS
    + """
  const parts = [document.documentElement.textContent];
  for (const element of document.querySelectorAll("*")) {
    for (const [, value] of attributesOf(element)) parts.push(value);
    if ("value" in element && typeof element.value === "string") parts.push(element.value);
  }
  return parts.join("\\n");
}
"""
)


@dataclass
class Findings:
    ran: list[str] = field(default_factory=list)  # hook calls and dialogs
    injected: list[str] = field(default_factory=list)
    shown: str = ""
    pages: int = 0

    def not_shown(self) -> list[str]:
        return [payload for payload in PAYLOADS if payload not in self.shown]


@pytest.fixture
def world(settings, tmp_path, sent_jobs) -> World:  # type: ignore[no-untyped-def]
    """The world with payloads for text (the guidelines, the one Markdown field, get all of them), and its
    annotator figures computed as a worker would, so the pages about annotators show their names."""
    settings.MEDIA_ROOT = tmp_path / "media"
    built = build_world(PayloadFeed(PAYLOADS, per_field=4, whole=["guidelines"]))
    quality = project_quality_request(project=built.p1.project, force=True)
    project_quality_refresh(quality_id=quality.pk)
    assert ProjectQuality.objects.get(pk=quality.pk).status == ProjectQuality.Status.DONE
    return built


def pages_of(p1: ProjectWorld) -> Iterator[tuple[str, str, list[object]]]:
    """(who looks, URL name, arguments) for every page that shows P1's text."""
    project = p1.project.pk
    yield Role.ADMIN, "annotate:project_list", []
    for name in ["project_queue", "item_list", "project_settings", "project_members", "schema_edit", "import_list"]:
        yield Role.ADMIN, f"annotate:{name}", [project]
    yield Role.ANNOTATOR, "annotate:label", [project]  # the item leased to the annotator
    yield Role.ADMIN, "annotate:import_detail", [project, p1.batch.pk]
    for item in p1.items:
        yield Role.ADMIN, "annotate:item_detail", [project, item.pk]
        yield Role.ADMIN, "curation:adjudicate", [project, item.pk]
    for name in ["review_queue", "annotator_quality", "dashboard", "version_list", "version_new"]:
        yield Role.ADMIN, f"curation:{name}", [project]
    yield Role.ADMIN, "curation:version_detail", [project, p1.version.pk]
    yield Role.ADMIN, "training:run_list", [project]
    yield Role.ADMIN, "training:run_detail", [project, p1.run.pk]
    yield Role.ADMIN, "training:campaign_list", [project]
    yield Role.ADMIN, "training:campaign_detail", [project, p1.campaign.pk]
    yield Role.ADMIN, "training:decision_list", [project, p1.campaign.pk, p1.round.number]


def logged_in(page: Page, base_url: str, user: Any) -> None:
    """Log the page's browser context in as `user` with a session cookie (the username is a payload)."""
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies([{"name": cookie.key, "value": cookie.value, "url": base_url}])


def watched(page: Page, findings: Findings) -> None:
    page.context.expose_function("__xssReport", lambda marker: findings.ran.append(f"{page.url}: {marker}"))
    page.context.add_init_script(HOOK)
    page.on("dialog", lambda dialog: (findings.ran.append(f"{page.url}: dialog {dialog.message!r}"), dialog.dismiss()))


def visit(page: Page, url: str, findings: Findings, *, count_shown: bool) -> None:
    response = page.goto(url, wait_until="load")
    assert response is not None
    assert response.status == 200, f"{url}: {response.status}"
    findings.injected += [f"{url}: {what}" for what in page.evaluate(INJECTED, MARKER_PREFIX)]
    if count_shown:
        findings.shown += "\n" + page.evaluate(SHOWN)
        findings.pages += 1


def look_at_every_page(browser: Browser, base_url: str, world: World) -> Findings:
    findings = Findings()
    by_role: dict[str, list[str]] = {}
    for role, name, arguments in pages_of(world.p1):
        by_role.setdefault(role, []).append(reverse(name, args=arguments))
    # The settings form holds the guidelines, which hold every payload, as typed: a page that shows them all
    # there would say nothing of the other fields, so it does not count towards every payload being shown.
    settings_page = reverse("annotate:project_settings", args=[world.p1.project.pk])
    for role, urls in by_role.items():
        with fresh_page(browser) as page:
            watched(page, findings)
            logged_in(page, base_url, world.p1.members[role])
            for url in urls:
                visit(page, base_url + url, findings, count_shown=url != settings_page)
    return findings


def test_the_corpus_has_every_kind_of_payload() -> None:
    kinds: dict[str, Callable[[str], bool]] = {
        "script tag": lambda p: "<script" in p.lower(),
        "event handler": lambda p: " on" in p.lower() and "=" in p,
        "javascript: URL": lambda p: "javascript:" in p,
        "data: URL": lambda p: "data:" in p,
        "svg": lambda p: "<svg" in p,
        "textarea break-out": lambda p: "</textarea>" in p,
        "template syntax": lambda p: "{{" in p or "{%" in p,
        "hx- attribute": lambda p: "hx-" in p,
        "right-to-left override": lambda p: "\u202e" in p,
        "markdown link": lambda p: "](" in p,
    }
    assert len(PAYLOADS) >= 50
    assert len(set(PAYLOADS)) == len(PAYLOADS)
    assert all(f"{MARKER_PREFIX}{n:02d}" in payload for n, payload in enumerate(PAYLOADS))
    assert [kind for kind, has in kinds.items() if not any(map(has, PAYLOADS))] == []


def test_no_payload_runs_or_injects_markup_on_any_page(live_server, browser: Browser, world: World) -> None:  # type: ignore[no-untyped-def]
    findings = look_at_every_page(browser, live_server.url, world)
    problems = [f"ran: {what}" for what in findings.ran] + [f"injected: {what}" for what in findings.injected]
    assert problems == [], "\n".join(problems)
    # Shown as typed (so escaped, not dropped or mangled), each on at least one page.
    assert findings.not_shown() == [], f"not shown as typed on any of {findings.pages} pages"
