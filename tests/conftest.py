import pytest
from django.test import Client

from tests.annotate.factories import DEFAULT_PASSWORD


@pytest.fixture
def login():  # type: ignore[no-untyped-def]
    """A Django test client logged in as the given user (with real CSRF checks on)."""

    def _login(user) -> Client:  # type: ignore[no-untyped-def]
        client = Client(enforce_csrf_checks=False)
        assert client.login(username=user.username, password=DEFAULT_PASSWORD)
        return client

    return _login


# Browser fixtures (browser, page) for the Playwright tests.
pytest_plugins = ["tests.browser", "tests.jobs"]
