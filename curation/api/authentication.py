"""The API's authentication chain (REST_FRAMEWORK in concord.settings.base), with the throttles that must run
while authenticating (curation.api.throttles): a failed token counts against its address, and an address that has
failed too often gets 429 with Retry-After for any token, so tokens cannot be guessed at speed."""

from typing import Any

from rest_framework.authentication import BaseAuthentication, TokenAuthentication, get_authorization_header
from rest_framework.exceptions import AuthenticationFailed, Throttled
from rest_framework.request import Request

from curation.api.throttles import AddressThrottle, AnonymousThrottle, BadTokenThrottle


class GuardedTokenAuthentication(TokenAuthentication):
    """DRF's token authentication (`Authorization: Token <key>`), refused to an address that failed too often."""

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        if not self._offers_token(request):
            return None  # the session, or nothing: not a token guess
        failures = BadTokenThrottle()
        if failures.spent(request):
            raise _throttled(failures)
        try:
            return super().authenticate(request)
        except AuthenticationFailed:
            failures.count(request)
            raise

    def _offers_token(self, request: Request) -> bool:
        words = get_authorization_header(request).split()
        return bool(words) and words[0].lower() == self.keyword.lower().encode()


class AnonymousAddressLimit(BaseAuthentication):
    """Last in the chain, so reached only by a request that no earlier class authenticated and that raised nothing:
    one without credentials. It authenticates no one; it counts the request against its address."""

    def authenticate(self, request: Request) -> None:
        requests = AnonymousThrottle()
        if requests.spent(request):
            raise _throttled(requests)
        requests.count(request)


def _throttled(throttle: AddressThrottle) -> Throttled:
    # DRF's exception handler turns `wait` into the Retry-After header.
    return Throttled(wait=throttle.retry_after())
