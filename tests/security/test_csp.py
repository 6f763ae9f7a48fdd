"""The Content-Security-Policy (django-csp): on every response, in every settings module, strict enough that inline
script and style never apply; and templates that need nothing inline, so the policy breaks no page
(tests/security/test_csp_browser.py loads the pages in Chromium)."""

import importlib
import re
import sys
from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from tests.annotate.factories import ProjectFactory, member

EXPECTED = {
    "default-src": ["'self'"],
    "object-src": ["'none'"],
    "base-uri": ["'self'"],
    "form-action": ["'self'"],
    "frame-ancestors": ["'none'"],
}

# What a template must not hold: each needs 'unsafe-inline' (or 'unsafe-eval', htmx's hx-on) to work.
INLINE = {
    "a <script> without src": re.compile(r"<script\b(?![^>]*\bsrc=)[^>]*>", re.I),
    "a <style> element": re.compile(r"<style\b", re.I),
    "a style attribute": re.compile(r"\sstyle\s*=", re.I),
    "an event handler attribute": re.compile(r"\son[a-z]+\s*=", re.I),
    "an hx-on attribute": re.compile(r"\s(?:data-)?hx-on", re.I),
    "a javascript: URL": re.compile(r"javascript:", re.I),
}
TEMPLATE_COMMENT = re.compile(r"\{%\s*comment\s*%\}.*?\{%\s*endcomment\s*%\}|\{#.*?#\}", re.S)


def policy(header: str) -> dict[str, list[str]]:
    directives = (part.split() for part in header.split(";") if part.strip())
    return {name: sources for name, *sources in directives}


@pytest.mark.django_db
@pytest.mark.parametrize("page", ["login", "annotate:project_list", "api:version-list"])
def test_responses_carry_the_policy(page: str) -> None:
    user = member(ProjectFactory())
    client = Client()
    client.force_login(user)
    response = client.get(reverse(page))
    assert policy(response["Content-Security-Policy"]) == EXPECTED


@pytest.mark.django_db
def test_a_locked_out_login_carries_the_policy_too() -> None:
    for _ in range(settings.AXES_FAILURE_LIMIT):
        response = Client().post(reverse("login"), {"username": "someone", "password": "wrong"})
    assert response.status_code == 429
    assert policy(response["Content-Security-Policy"]) == EXPECTED


@pytest.mark.parametrize("module", ["concord.settings.local", "concord.settings.test", "concord.settings.production"])
def test_every_settings_module_sets_the_policy(module: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SECRET_KEY", "x" * 50)
    monkeypatch.setenv("ALLOWED_HOSTS", "concord.example.org")
    monkeypatch.delitem(sys.modules, module, raising=False)
    loaded = importlib.import_module(module)  # afresh, with this environment
    assert "csp.middleware.CSPMiddleware" in loaded.MIDDLEWARE
    directives = {
        name: [str(source) for source in sources]
        for name, sources in loaded.CONTENT_SECURITY_POLICY["DIRECTIVES"].items()
    }
    assert directives == EXPECTED
    assert "CONTENT_SECURITY_POLICY_REPORT_ONLY" not in vars(loaded)  # enforced, not merely reported


def template_files() -> list[Path]:
    return sorted(Path(settings.BASE_DIR, "templates").rglob("*.html"))


@pytest.mark.parametrize("template", template_files(), ids=lambda path: str(path.relative_to(settings.BASE_DIR)))
def test_templates_hold_no_inline_script_style_or_handler(template: Path) -> None:
    # Comments may explain what is not allowed; they keep their lines so that the numbers below stay right.
    text = TEMPLATE_COMMENT.sub(lambda comment: "\n" * comment.group(0).count("\n"), template.read_text())
    found = [
        f"line {text.count(chr(10), 0, match.start()) + 1}: {what} ({match.group(0).strip()!r})"
        for what, pattern in INLINE.items()
        for match in pattern.finditer(text)
    ]
    assert not found, f"{template.name} needs 'unsafe-inline' under the CSP: {found}"


def test_the_htmx_configuration_needs_neither_inline_styles_nor_eval() -> None:
    base = Path(settings.BASE_DIR, "templates", "base.html").read_text()
    config = re.search(r"<meta name=\"htmx-config\" content='([^']*)'>", base)
    assert config is not None
    for flag in ('"includeIndicatorStyles": false', '"allowEval": false', '"allowScriptTags": false'):
        assert flag in config.group(1)
