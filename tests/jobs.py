"""Background jobs in tests: the tasks services send by name (concord.jobs), recorded instead of sent, or sent to
a queue of the test's own that only the test's worker reads."""

import uuid

import pytest
from _pytest.monkeypatch import MonkeyPatch

from concord import jobs
from concord.celery import app


@pytest.fixture
def sent_jobs(monkeypatch: MonkeyPatch) -> list[tuple[str, int]]:
    """The (task name, job id) of every task a service sends during the test; nothing reaches a broker."""
    sent: list[tuple[str, int]] = []
    monkeypatch.setattr(jobs, "send", lambda name, job_id: sent.append((name, job_id)))
    return sent


def private_queue(monkeypatch: MonkeyPatch, *task_names: str) -> str:
    """Send these tasks (by name) to a new queue of this test's own; other tasks go where they always go."""
    queue = f"test-{uuid.uuid4().hex}"
    send = jobs.send

    def to_private_queue(name: str, job_id: int) -> None:
        if name in task_names:
            app.send_task(name, args=[job_id], queue=queue)
        else:
            send(name, job_id)

    monkeypatch.setattr(jobs, "send", to_private_queue)
    return queue
