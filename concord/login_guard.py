"""Password guessing: django-axes' database handler with a second limit, per address, and the lockout page.

Axes counts failed logins per (username, address) and locks that pair out at AXES_FAILURE_LIMIT, so a mistyping
colleague at the same address, or the same person at home, can still log in. An address that tries a few passwords
on each of many usernames stays under that limit, so the failures of an address are also summed whatever the
usernames, and lock the address out at CONCORD_LOGIN_ADDRESS_FAILURE_LIMIT: a higher bar, so that colleagues
behind one office address do not lock each other out with a typo each. A username guessed from many addresses
(a botnet, a few tries each) is summed over them too and locked out everywhere at
CONCORD_LOGIN_USERNAME_FAILURE_LIMIT: the highest bar, as anyone can push any username to it, so it only stops a
guesser who spreads out. All count failures within the cool-off (AXES_COOLOFF_TIME) only. Settings and the admin's
unlock: concord.settings.base.
"""

import math
from datetime import datetime, timedelta
from typing import Any

from axes.attempts import get_cool_off_threshold
from axes.handlers.database import AxesDatabaseHandler
from axes.helpers import get_client_username, get_cool_off
from axes.models import AccessAttempt
from axes.signals import user_locked_out
from django.conf import settings
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

LOCKED_OUT = 429


class AxesRequest(HttpRequest):
    """A request as axes' proxy handler annotates it before calling the handler (AxesProxyHandler.update_request)."""

    axes_locked_out: bool
    axes_credentials: dict[str, Any] | None
    axes_ip_address: str | None
    axes_attempt_time: datetime


class LoginGuardHandler(AxesDatabaseHandler):
    def is_locked(self, request: AxesRequest, credentials: dict[str, Any] | None = None) -> bool:
        return (
            super().is_locked(request, credentials)
            or self._address_locked(request)
            or self._username_locked(request, credentials)
        )

    def user_login_failed(
        self, sender: Any, credentials: dict[str, Any], request: AxesRequest | None = None, **kwargs: Any
    ) -> None:
        """Axes records the failure and flags the request when the pair has reached its limit; flag it as well
        when the address has reached its own."""
        super().user_login_failed(sender, credentials, request, **kwargs)
        if request is None or request.axes_locked_out or self.is_allowed(request, credentials):
            return
        request.axes_locked_out = True
        request.axes_credentials = credentials
        username = get_client_username(request, credentials)
        user_locked_out.send("axes", request=request, username=username, ip_address=request.axes_ip_address)

    def _address_locked(self, request: AxesRequest) -> bool:
        return _failures(request, ip_address=request.axes_ip_address) >= settings.CONCORD_LOGIN_ADDRESS_FAILURE_LIMIT

    def _username_locked(self, request: AxesRequest, credentials: dict[str, Any] | None) -> bool:
        username = get_client_username(request, credentials)
        if not username:
            return False
        return _failures(request, username=username) >= settings.CONCORD_LOGIN_USERNAME_FAILURE_LIMIT


def _failures(request: AxesRequest, **where: Any) -> int:
    """Failed logins within the cool-off of the attempts matching `where`, summed over addresses or usernames."""
    attempts = AccessAttempt.objects.filter(attempt_time__gte=get_cool_off_threshold(request), **where)
    return int(attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0)


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """What a locked-out login gets (AXES_LOCKOUT_CALLABLE): 429 with Retry-After. Every failure restarts the
    cool-off, this one included, so the wait is the whole cool-off. The page says nothing of whether the username
    exists: a made-up one is locked out the same way."""
    cool_off: timedelta = get_cool_off(request) or timedelta(0)
    seconds = math.ceil(cool_off.total_seconds())
    context = {"minutes": math.ceil(seconds / 60)}
    response = render(request, "registration/locked_out.html", context, status=LOCKED_OUT)
    response["Retry-After"] = str(seconds)
    return response
