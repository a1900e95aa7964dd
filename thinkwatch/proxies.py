"""Which address a request came from: the peer, unless the peer is one of
THINKWATCH_TRUSTED_PROXIES, in which case the nearest X-Forwarded-For hop that is not a
trusted proxy. Shared by the gateway (log records) and the console (IP-bound sessions)."""

import ipaddress

from django.conf import settings
from django.http import HttpRequest


def client_ip(peer: str | None, forwarded_for: str) -> str | None:
    """The peer (the server gives an address), or the forwarded hop if it is a valid IP
    address (a proxy may forward "unknown" or garbage): None then."""
    if peer in settings.TRUSTED_PROXIES:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        for hop in reversed(hops):
            if hop not in settings.TRUSTED_PROXIES:
                return _valid(hop)
    return peer


def _valid(address: str) -> str | None:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        return None


def request_ip(request: HttpRequest) -> str | None:
    """The client address of a console request (Django puts the peer in REMOTE_ADDR)."""
    meta = request.META
    return client_ip(meta.get("REMOTE_ADDR") or None, meta.get("HTTP_X_FORWARDED_FOR", ""))
