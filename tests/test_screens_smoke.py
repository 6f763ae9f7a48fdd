"""tests/screens.py's sideways-scroll check itself: it must catch a page wider than a phone."""

import pytest
from playwright.sync_api import Browser

from tests.screens import OVERFLOWING, page_at

pytestmark = pytest.mark.browser


def test_the_sideways_scroll_check_names_what_is_too_wide_and_spares_a_scroll_box(browser: Browser) -> None:
    with page_at(browser, "phone") as page:
        page.set_content('<body style="margin:0"><div id="wide" style="width:900px">x</div></body>')
        assert page.evaluate(OVERFLOWING)[0].startswith("div#wide (right edge 900 px)")
        boxed = '<div style="overflow-x:auto"><div id="wide" style="width:900px">x</div></div>'
        page.set_content(f'<body style="margin:0">{boxed}</body>')
        assert page.evaluate(OVERFLOWING) == []
