"""Waits in tests. A test waits on an event (a condition polled, a threading.Event, Playwright's expect), never for
a length of time; the limit on a wait only guards against a hang. So it is generous: a slow, busy machine (two
cores, a worker importing torch beside Chromium) passes, and only a test that has hung waits this long."""

import time
from collections.abc import Callable

HANG_GUARD_S = 600
HANG_GUARD_MS = HANG_GUARD_S * 1000  # for Playwright, which counts in milliseconds


def wait_for(condition: Callable[[], object], timeout: float = HANG_GUARD_S) -> bool:
    """Poll `condition` until it is true (True) or `timeout` seconds have passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False
