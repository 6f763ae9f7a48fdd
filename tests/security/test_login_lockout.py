"""Password guessing through the real login form (django-axes with concord.login_guard): a username is locked out
at one address after AXES_FAILURE_LIMIT wrong passwords, an address after CONCORD_LOGIN_ADDRESS_FAILURE_LIMIT
failures whatever the usernames, and the lockout answers 429 with Retry-After even to the right password. Other
users and addresses are not affected, the lockout ends with the cool-off or an admin's unlock, and a forged
X-Forwarded-For does not buy a fresh address."""

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.core.management import call_command
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from tests.annotate.factories import DEFAULT_PASSWORD, UserFactory

pytestmark = pytest.mark.django_db

HOME = "10.0.0.1"
ELSEWHERE = "10.0.0.2"


def log_in(client: Client, username: str, password: str, address: str = HOME, **headers: str) -> HttpResponse:
    return client.post(reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address, **headers)  # type: ignore[return-value]


def logged_in(response: HttpResponse, client: Client) -> bool:
    return response.status_code == 302 and SESSION_KEY in client.session


def guess(username: str, times: int, address: str = HOME, **headers: str) -> list[int]:
    """Wrong passwords, each from a fresh client (no cookie to tie them together); their status codes."""
    return [log_in(Client(), username, f"wrong-{n}", address, **headers).status_code for n in range(times)]


def limit() -> int:
    return int(settings.AXES_FAILURE_LIMIT)


def form_then_lockout(count: int) -> list[int]:
    """What `count` wrong passwords that reach a limit get: the form again, then the lockout on the last."""
    return [200] * (count - 1) + [429]


def assert_locked_out(response: HttpResponse, client: Client) -> None:
    assert response.status_code == 429
    assert response["Retry-After"] == str(int(settings.AXES_COOLOFF_TIME.total_seconds()))
    assert "Too many failed logins" in response.content.decode()
    assert SESSION_KEY not in client.session


def test_the_right_password_is_refused_once_a_username_reached_the_failure_limit() -> None:
    alice = UserFactory(username="alice")
    assert guess("alice", limit()) == form_then_lockout(limit())
    client = Client()
    assert_locked_out(log_in(client, alice.username, DEFAULT_PASSWORD), client)
    # Nothing behind the login opens either.
    assert client.get(reverse("annotate:project_list")).status_code == 302


def test_a_made_up_username_is_locked_out_alike_so_the_lockout_reveals_nothing() -> None:
    UserFactory(username="alice")
    assert guess("alice", limit()) == guess("nobody-by-this-name", limit())


def test_other_usernames_at_the_address_and_the_username_elsewhere_still_log_in() -> None:
    alice, bob = UserFactory(username="alice"), UserFactory(username="bob")
    guess("alice", limit())
    client = Client()
    assert logged_in(log_in(client, bob.username, DEFAULT_PASSWORD, HOME), client)
    client = Client()
    assert logged_in(log_in(client, alice.username, DEFAULT_PASSWORD, ELSEWHERE), client)


def test_an_address_trying_many_usernames_is_locked_out_for_all_of_them() -> None:
    carol = UserFactory(username="carol")
    # Each username stays under its own limit; together they reach the address's.
    budget = settings.CONCORD_LOGIN_ADDRESS_FAILURE_LIMIT
    names = [f"guess-{n // (limit() - 1)}" for n in range(budget)]
    assert [log_in(Client(), name, "wrong").status_code for name in names] == form_then_lockout(budget)
    client = Client()
    assert_locked_out(log_in(client, carol.username, DEFAULT_PASSWORD, HOME), client)
    client = Client()
    assert logged_in(log_in(client, carol.username, DEFAULT_PASSWORD, ELSEWHERE), client)


def test_a_username_guessed_from_many_addresses_is_locked_out_everywhere() -> None:
    dave = UserFactory(username="dave")
    # Each address stays under the pair's limit; together they reach the username's.
    budget = settings.CONCORD_LOGIN_USERNAME_FAILURE_LIMIT
    addresses = [f"10.1.{n // (limit() - 1)}.1" for n in range(budget)]
    assert [log_in(Client(), "dave", "wrong", address).status_code for address in addresses] == form_then_lockout(
        budget
    )
    client = Client()
    assert_locked_out(log_in(client, dave.username, DEFAULT_PASSWORD, "10.9.9.9"), client)
    # Only that username: another one logs in from the same addresses.
    erin = UserFactory(username="erin")
    client = Client()
    assert logged_in(log_in(client, erin.username, DEFAULT_PASSWORD, addresses[-1]), client)


def test_an_ipv6_client_counts_as_its_whole_network_so_rotating_addresses_buys_nothing() -> None:
    frank = UserFactory(username="frank")
    rotated = [f"2001:db8:7:7::{n + 1:x}" for n in range(limit())]
    assert [log_in(Client(), "frank", "wrong", address).status_code for address in rotated] == form_then_lockout(
        limit()
    )
    client = Client()
    assert_locked_out(log_in(client, frank.username, DEFAULT_PASSWORD, "2001:db8:7:7:ffff::9"), client)
    client = Client()
    assert logged_in(log_in(client, frank.username, DEFAULT_PASSWORD, "2001:db8:7:8::1"), client)


def test_a_successful_login_clears_the_count_of_earlier_mistakes() -> None:
    alice = UserFactory(username="alice")
    for _ in range(2):
        assert guess("alice", limit() - 1) == [200] * (limit() - 1)
        client = Client()
        assert logged_in(log_in(client, alice.username, DEFAULT_PASSWORD), client)


def test_the_lockout_ends_with_the_cool_off() -> None:
    alice = UserFactory(username="alice")
    guess("alice", limit())
    AccessAttempt.objects.update(attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1))
    client = Client()
    assert logged_in(log_in(client, alice.username, DEFAULT_PASSWORD), client)


def test_an_admin_unlocks_a_user_in_the_admin() -> None:
    alice = UserFactory(username="alice")
    guess("alice", limit())
    admin = Client()
    admin.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    attempts = admin.get(reverse("admin:axes_accessattempt_changelist"))
    assert attempts.status_code == 200
    assert "alice" in attempts.content.decode()
    assert "alice" in admin.get(reverse("admin:axes_accessfailurelog_changelist")).content.decode()
    rows = list(AccessAttempt.objects.filter(username="alice").values_list("pk", flat=True))
    deleted = admin.post(
        reverse("admin:axes_accessattempt_changelist"),
        {"action": "delete_selected", "_selected_action": rows, "post": "yes"},
    )
    assert deleted.status_code == 302
    client = Client()
    assert logged_in(log_in(client, alice.username, DEFAULT_PASSWORD), client)


def test_an_admin_unlocks_a_user_with_the_management_command() -> None:
    alice = UserFactory(username="alice")
    guess("alice", limit())
    call_command("axes_reset_username", "alice")
    client = Client()
    assert logged_in(log_in(client, alice.username, DEFAULT_PASSWORD), client)


def test_the_admin_login_is_locked_out_alike() -> None:
    UserFactory(username="root", is_staff=True, is_superuser=True)
    statuses = [
        Client().post(reverse("admin:login"), {"username": "root", "password": "wrong"}, REMOTE_ADDR=HOME).status_code
        for _ in range(limit())
    ]
    assert statuses == form_then_lockout(limit())


def test_a_forged_forwarded_for_header_does_not_escape_the_lockout() -> None:
    alice = UserFactory(username="alice")
    statuses = [
        log_in(Client(), "alice", "wrong", HOME, HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code
        for n in range(limit())
    ]
    assert statuses == form_then_lockout(limit())
    client = Client()
    response = log_in(client, alice.username, DEFAULT_PASSWORD, HOME, HTTP_X_FORWARDED_FOR="198.51.100.200")
    assert_locked_out(response, client)


def test_behind_a_trusted_proxy_the_address_it_forwards_counts(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CONCORD_TRUSTED_PROXIES = 1
    alice = UserFactory(username="alice")
    proxy = HOME
    # The client may prepend anything; the proxy appends the address it saw, which is what counts.
    statuses = guess("alice", limit(), proxy, HTTP_X_FORWARDED_FOR="1.2.3.4, 203.0.113.7")
    assert statuses == form_then_lockout(limit())
    client = Client()
    locked = log_in(client, alice.username, DEFAULT_PASSWORD, proxy, HTTP_X_FORWARDED_FOR="5.6.7.8, 203.0.113.7")
    assert_locked_out(locked, client)
    client = Client()
    assert logged_in(
        log_in(client, alice.username, DEFAULT_PASSWORD, proxy, HTTP_X_FORWARDED_FOR="203.0.113.8"), client
    )
