"""The API's throttles: DRF's sliding windows, kept in Django's cache (Redis, so every web worker counts together).

- UserThrottle (every view): CONCORD_API_USER_RATE requests per user once authenticated.
- AnonymousThrottle: requests that carry no credentials, per address (CONCORD_API_ANON_RATE).
- BadTokenThrottle: failed token logins per address (CONCORD_API_BAD_TOKEN_RATE); once an address has used them up,
  every token it sends, right or wrong, is refused until the oldest failure leaves the window.

The last two are applied while authenticating (curation.api.authentication), because IsAuthenticated answers an
unauthenticated request 401 before a view's throttles run. Addresses come from concord.addresses.
"""

import math
from typing import Any

from rest_framework.request import Request
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle, UserRateThrottle

from concord.addresses import client_address


class _RatesFromSettings:
    """Reads the rate when the throttle is made rather than when DRF is imported, so changed settings apply."""

    scope: str | None

    def get_rate(self) -> str | None:
        rate = api_settings.DEFAULT_THROTTLE_RATES[self.scope or ""]
        return None if rate is None else str(rate)


class UserThrottle(_RatesFromSettings, UserRateThrottle):
    scope = "user"

    def get_ident(self, request: Request) -> str:
        return client_address(request)


class AddressThrottle(_RatesFromSettings, SimpleRateThrottle):
    """Counted per client address. It never looks at request.user: it runs while that is being worked out."""

    num_requests: int
    duration: int

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"scope": self.scope, "ident": client_address(request)}

    def spent(self, request: Request) -> bool:
        """Whether the address has used up its window, without counting this request."""
        self.key = self.get_cache_key(request, None)
        self.now = self.timer()
        self.history = [at for at in self.cache.get(self.key, []) if at > self.now - self.duration]
        return len(self.history) >= self.num_requests

    def count(self, request: Request) -> None:
        self.spent(request)  # loads this address's window
        self.history.insert(0, self.now)
        self.cache.set(self.key, self.history, self.duration)

    def retry_after(self) -> int:
        """Seconds until enough of the counted requests have left the window for one more (after spent())."""
        blocking = self.history[self.num_requests - 1]  # newest first: the one whose expiry frees a place
        return max(1, math.ceil(self.duration - (self.now - blocking)))


class AnonymousThrottle(AddressThrottle):
    scope = "anon"


class BadTokenThrottle(AddressThrottle):
    scope = "bad_token"
