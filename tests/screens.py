"""Pages at the widths people use them (issue 14): a desk (1440 px) and a phone (390 px). At each width a test
asserts what must be visible, that nothing makes the page scroll sideways (a wide table scrolls inside its own
box, `.table-scroll`), and saves a screenshot for the README and the tour (docs/tour.md), under
CONCORD_SCREENSHOT_DIR when set (`make screenshots`), else under the test's temporary directory."""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, Page

from tests.browser import log_in
from tests.waits import HANG_GUARD_MS

WIDTHS = {"desk": 1440, "phone": 390}
HEIGHT = {"desk": 900, "phone": 844}

# The elements wider than the viewport that make the page scroll sideways, each named by tag, id and class.
OVERFLOWING = """() => {
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth <= width) return [];
  const inScrollBox = el => { for (let p = el.parentElement; p; p = p.parentElement) {
    const overflow = getComputedStyle(p).overflowX; if (overflow === 'auto' || overflow === 'scroll') return true; }
    return false; };
  return [...document.querySelectorAll('body *')]
    .filter(el => el.getBoundingClientRect().right > width + 1 && !inScrollBox(el))
    .slice(0, 10)
    .map(el => {
      const named = typeof el.className === 'string' && el.className;
      const classes = named ? '.' + el.className.trim().split(/\\s+/).join('.') : '';
      const right = Math.round(el.getBoundingClientRect().right);
      return `${el.tagName.toLowerCase()}${el.id ? '#' + el.id : ''}${classes} (right edge ${right} px)`;
    });
}"""


def assert_no_sideways_scroll(page: Page, what: str) -> None:
    """Nothing on the page reaches past the viewport's right edge, outside a box that scrolls on its own."""
    wide = page.evaluate(OVERFLOWING)
    assert not wide, f"{what} scrolls sideways at {page.viewport_size}: {wide}"


def screenshot_dir(tmp_path: Path) -> Path:
    chosen = os.environ.get("CONCORD_SCREENSHOT_DIR")
    folder = Path(chosen) if chosen else tmp_path / "screens"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def page_at(browser: Browser, width: str) -> Iterator[Page]:
    """A page of its own (cookies, storage) at one of WIDTHS, closed after."""
    context = browser.new_context(viewport={"width": WIDTHS[width], "height": HEIGHT[width]})
    context.set_default_timeout(HANG_GUARD_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def at_both_widths(
    browser: Browser,
    base_url: str,
    user: object,
    url: str,
    check: Callable[[Page], None],
    *,
    name: str,
    folder: Path,
) -> list[Path]:
    """Log `user` in and open `url` at each width: `check(page)` asserts what must be visible, then the page
    must not scroll sideways, and a full-page screenshot is saved as <name>-<width>.png in `folder`."""
    shots = []
    for width in WIDTHS:
        with page_at(browser, width) as page:
            log_in(page, base_url, user)
            page.goto(base_url + url)
            check(page)
            assert_no_sideways_scroll(page, f"{name} ({width})")
            shot = folder / f"{name}-{width}.png"
            page.screenshot(path=str(shot), full_page=True)
            shots.append(shot)
    return shots
