"""The address a request comes from, as the login lockout (django-axes) and the API's throttles count it.

Behind CONCORD_TRUSTED_PROXIES reverse proxies, REMOTE_ADDR is the nearest proxy's, and the client's address is the
one the outermost proxy appended to X-Forwarded-For: the Nth entry from the right (as DRF's NUM_PROXIES reads it).
Entries further left are whatever the client sent, so they never count. With no proxy (the default) the header is
ignored altogether: otherwise a guesser could pose as a new address with every request.

An IPv6 client commonly holds a whole /64 network and can send from any address in it, so an IPv6 address counts as
its /64 (written as the network's first address, which still fits an address column).
"""

import ipaddress

from django.conf import settings
from django.http import HttpRequest

IPV6_CLIENT_PREFIX = 64


def client_address(request: HttpRequest) -> str:
    return _counted_as(_sending_address(request))


def _sending_address(request: HttpRequest) -> str:
    remote = str(request.META.get("REMOTE_ADDR", ""))
    proxies: int = settings.CONCORD_TRUSTED_PROXIES
    forwarded = str(request.META.get("HTTP_X_FORWARDED_FOR", ""))
    if proxies <= 0 or not forwarded:
        return remote
    hops = [hop.strip() for hop in forwarded.split(",")]
    candidate = hops[-min(proxies, len(hops))]
    # A proxy writes an address; anything else would not fit the attempt log's address column either.
    return candidate if _is_address(candidate) else remote


def _counted_as(text: str) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return text
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.ip_network(f"{address}/{IPV6_CLIENT_PREFIX}", strict=False).network_address)
    return text


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
