"""Fixtures of the pages whose figures a worker computes: a test module's `project` fixture names the project."""

import pytest

from annotate.models import Role
from tests.annotate.factories import member


@pytest.fixture
def curator(login, project):  # type: ignore[no-untyped-def]
    return login(member(project, Role.CURATOR))


@pytest.fixture
def get(curator, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    """GET as the curator, sending (after the commit) whatever the request asked a worker for."""

    def _get(url: str, **extra):  # type: ignore[no-untyped-def]
        with django_capture_on_commit_callbacks(execute=True):
            return curator.get(url, **extra)

    return _get
