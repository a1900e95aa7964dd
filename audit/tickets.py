"""One-shot tickets that let a signed-in page open the dashboard's websocket.

The page mints a ticket bound to its user; the socket presents it in its query string and
the consumer redeems it. A ticket works once and for TTL_SECONDS, so the socket needs no
session cookie and a ticket seen later (a proxy log, the browser history) is worthless.
Tickets live in Django's cache, which is Redis when REDIS_URL is set and the console
process's memory otherwise; only their hash is stored.
"""

import hashlib
import secrets
import time
from typing import Any

from django.core.cache import cache

TTL_SECONDS = 30
_MAX_LENGTH = 100


def _key(ticket: str) -> str:
    return "dashboard-ticket:" + hashlib.sha256(ticket.encode()).hexdigest()


def mint(user: Any) -> str:
    ticket = secrets.token_urlsafe(32)
    # The expiry travels with the entry too: the cache's own TTL is the store's clock
    # (Redis's), the check below is ours, and either one ends the ticket.
    cache.set(_key(ticket), (user.pk, time.time() + TTL_SECONDS), TTL_SECONDS)
    return ticket


def redeem(ticket: str) -> int | None:
    """The id of the user the ticket was minted for; None when it is unknown, expired or
    already used. Of two sockets racing with one ticket, only the one whose delete removed
    the entry gets the user."""
    if not ticket or len(ticket) > _MAX_LENGTH:
        return None
    key = _key(ticket)
    entry = cache.get(key)
    if entry is None or not cache.delete(key):
        return None
    user_id, expires_at = entry
    return int(user_id) if time.time() < expires_at else None
