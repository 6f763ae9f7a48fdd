"""Token guessing and floods on the REST API, through HTTP (curation.api.authentication and .throttles): failed
tokens are counted per address and, past CONCORD_API_BAD_TOKEN_RATE, every token from that address (the right one
too) gets 429 with Retry-After; requests without credentials are limited per address, logged-in ones per user.
The counts live in the shared cache, so another process (a second web worker) sees them."""

import os
import subprocess
import sys

import pytest
from django.conf import settings as django_settings
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from curation.api.throttles import AnonymousThrottle, BadTokenThrottle
from tests.annotate.factories import UserFactory

pytestmark = pytest.mark.django_db

VERSIONS = "/api/v1/versions/"
GUESSER = "10.0.0.1"
ELSEWHERE = "10.0.0.2"


def with_token(key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def token_of(user) -> str:  # type: ignore[no-untyped-def]
    return Token.objects.create(user=user).key


def assert_throttled(response, window_s: int) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 429, response.content
    assert 0 < int(response["Retry-After"]) <= window_s


def guess_tokens(times: int, address: str = GUESSER) -> list[int]:
    return [with_token(f"{n:040x}").get(VERSIONS, REMOTE_ADDR=address).status_code for n in range(times)]


def test_an_address_that_sent_too_many_bad_tokens_is_refused_every_token() -> None:
    throttle = BadTokenThrottle()
    key = token_of(UserFactory())
    assert guess_tokens(throttle.num_requests) == [401] * throttle.num_requests
    assert_throttled(with_token("f" * 40).get(VERSIONS, REMOTE_ADDR=GUESSER), throttle.duration)
    # The right token as well: a guess that happens to hit gets nothing either.
    assert_throttled(with_token(key).get(VERSIONS, REMOTE_ADDR=GUESSER), throttle.duration)
    # Another address, and a logged-in browser at the guessing one, are not affected.
    assert with_token(key).get(VERSIONS, REMOTE_ADDR=ELSEWHERE).status_code == 200
    browser = APIClient()
    browser.force_login(UserFactory())
    assert browser.get(VERSIONS, REMOTE_ADDR=GUESSER).status_code == 200


def test_good_tokens_do_not_use_up_the_bad_token_allowance() -> None:
    throttle = BadTokenThrottle()
    key = token_of(UserFactory())
    for _ in range(throttle.num_requests + 1):
        assert with_token(key).get(VERSIONS, REMOTE_ADDR=GUESSER).status_code == 200
    assert guess_tokens(1) == [401]


def test_a_forged_forwarded_for_header_does_not_reset_the_count() -> None:
    throttle = BadTokenThrottle()
    statuses = [
        with_token(f"{n:040x}").get(VERSIONS, REMOTE_ADDR=GUESSER, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code
        for n in range(throttle.num_requests + 1)
    ]
    assert statuses == [401] * throttle.num_requests + [429]


def test_requests_without_credentials_are_limited_per_address() -> None:
    throttle = AnonymousThrottle()
    anonymous = APIClient()
    assert [anonymous.get(VERSIONS, REMOTE_ADDR=GUESSER).status_code for _ in range(throttle.num_requests)] == [
        401
    ] * throttle.num_requests
    assert_throttled(anonymous.get(VERSIONS, REMOTE_ADDR=GUESSER), throttle.duration)
    assert anonymous.get(VERSIONS, REMOTE_ADDR=ELSEWHERE).status_code == 401


def test_a_logged_in_client_is_limited_per_user(settings) -> None:  # type: ignore[no-untyped-def]
    rates = settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {**rates, "user": "3/min"}}
    busy, other = with_token(token_of(UserFactory())), with_token(token_of(UserFactory()))
    assert [busy.get(VERSIONS, REMOTE_ADDR=GUESSER).status_code for _ in range(3)] == [200] * 3
    assert_throttled(busy.get(VERSIONS, REMOTE_ADDR=ELSEWHERE), 60)  # per user, wherever it comes from
    assert other.get(VERSIONS, REMOTE_ADDR=GUESSER).status_code == 200


def test_another_process_sees_the_count() -> None:
    """Gunicorn's workers are processes: a count kept in one worker's memory would let a guesser spread its
    tries over them. A separate Python process asks the throttle about the guessing address."""
    guess_tokens(BadTokenThrottle().num_requests)
    ask = (
        "import django; django.setup()\n"
        "from django.test import RequestFactory\n"
        "from curation.api.throttles import BadTokenThrottle\n"
        f"request = RequestFactory().get('/', REMOTE_ADDR='{GUESSER}')\n"
        "print('spent' if BadTokenThrottle().spent(request) else 'fresh')\n"
    )
    child = subprocess.run(
        [sys.executable, "-c", ask],
        cwd=django_settings.BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "concord.settings.test"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["spent"]
