"""A live worker, for tests: job locks (concord.locks) held on another thread's database connection."""

import contextlib
import threading
from collections.abc import Iterator

from django.db import connections

from concord.locks import job_lock
from tests.waits import HANG_GUARD_S, wait_for


@contextlib.contextmanager
def held_by_a_live_worker(*keys: tuple[int, int]) -> Iterator[None]:
    """Hold the job locks (namespace, key) on another connection for the length of the block, as a worker
    running those jobs does; they are released, and that connection closed, when the block ends."""
    held, release = threading.Event(), threading.Event()

    def live_worker() -> None:
        with contextlib.ExitStack() as stack:
            if all(stack.enter_context(job_lock(namespace, key)) for namespace, key in keys):
                held.set()
                release.wait(timeout=HANG_GUARD_S)
        connections.close_all()

    worker = threading.Thread(target=live_worker)
    worker.start()
    try:
        # Until the worker holds the locks, or gives up (at once) because another connection holds one.
        wait_for(lambda: held.is_set() or not worker.is_alive())
        assert held.is_set(), f"another connection already held one of the locks {keys}"
        yield
    finally:
        release.set()
        worker.join()
