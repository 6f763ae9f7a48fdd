import pytest
import redis
from django.conf import settings
from django.core.cache import cache
from django.test import Client


@pytest.fixture
def login():  # type: ignore[no-untyped-def]
    """A Django test client logged in as the given user (CSRF checks off). force_login, not login(): the login
    lockout (django-axes) refuses an authenticate() without a request, and tests/security/test_login_lockout.py
    logs in through the form."""

    def _login(user) -> Client:  # type: ignore[no-untyped-def]
        client = Client(enforce_csrf_checks=False)
        client.force_login(user)
        return client

    return _login


@pytest.fixture(autouse=True)
def no_throttle_counts_from_earlier_tests() -> None:
    """The API's throttles count in the Redis cache, which outlives each test's database, and every test client
    comes from 127.0.0.1: each test starts with no counts. Only this run's keys go (concord.settings.test gives a
    run its own key prefix); Django's cache.clear() would empty the whole Redis database, other runs' included."""
    client = redis.Redis.from_url(settings.CACHES["default"]["LOCATION"])
    try:
        stale = list(client.scan_iter(match=cache.make_key("throttle_*"), count=1000))
        if stale:
            client.delete(*stale)
    finally:
        client.close()


# Browser fixtures (browser, page) for the Playwright tests.
pytest_plugins = ["tests.browser", "tests.jobs"]
