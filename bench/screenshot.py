"""Screenshot of the labeling page for the README: docs/labeling.png.

Needs a running server with the demo seeded (`make run`, or `manage.py seed_demo` and `runserver`):

    .venv/bin/python bench/screenshot.py --url http://127.0.0.1:8000

It logs in as a demo annotator, opens the first project's labeling page, picks a strength and types a
justification so the page looks in use, and saves the screenshot. Nothing is submitted, but the item shown
stays leased to that annotator until the lease runs out.
"""

import argparse
import json
import sys
from pathlib import Path

from playwright.sync_api import Page, expect, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-gpu",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
JUSTIFICATION = "B answers the question that was asked and gets the facts right; A wanders off topic."


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="Base URL of the running server.")
    parser.add_argument("--logins", type=Path, default=ROOT / "var" / "demo-logins.json", help="Demo logins JSON.")
    parser.add_argument("--user", default="annotator1", help="Which demo account to log in as.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "labeling.png", help="Where to save the PNG.")
    parser.add_argument("--key", default="6", help="Strength key to press, 1-7 (6: B is better).")
    return parser.parse_args()


def _open_label_page(page: Page, base_url: str, username: str, password: str) -> None:
    page.goto(f"{base_url}/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name="Your projects")).to_be_visible()
    page.goto(f"{base_url}/projects/")
    projects = page.locator(".project-list a")
    if projects.count() == 0:
        sys.exit(f"{username} is in no project: run `manage.py seed_demo` first.")
    projects.first.click()
    start = page.get_by_role("link", name="Start labeling")
    if start.count() == 0:
        sys.exit(f"Nothing is left for {username} to label in the first project.")
    start.click()
    expect(page.locator("#item-card [data-item-id]")).to_be_visible()
    page.wait_for_load_state()  # label.js (deferred) has run, so the keys below reach it


def main() -> None:
    args = _parse_args()
    if not CHROMIUM.exists():
        sys.exit(f"{CHROMIUM} is missing: install Debian's chromium package.")
    logins = json.loads(args.logins.read_text())
    base_url = args.url.rstrip("/")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        _open_label_page(page, base_url, args.user, logins[args.user])
        page.keyboard.press(args.key)
        expect(page.locator(f'.strength-option[data-key="{args.key}"] input')).to_be_checked()
        page.locator("#justification").fill(JUSTIFICATION)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        browser.close()
    print(f"Saved {args.out}")


if __name__ == "__main__":
    main()
