"""The one outbound HTTP client of a gateway process.

aiohttp, not httpx: under 50 concurrent requests on one core a forwarding view with
httpx.AsyncClient served ~455 RPS and with aiohttp ~2,500 RPS (docs/decisions.md).
"""

import asyncio
import time
from email.utils import parsedate_to_datetime

import aiohttp
from django.conf import settings

USER_AGENT = "ThinkWatch/0.1"

_session: aiohttp.ClientSession | None = None


def session() -> aiohttp.ClientSession:
    """The process-wide session, created on first use inside the running event loop."""
    global _session
    loop = asyncio.get_running_loop()
    if _session is None or _session.closed or _session._loop is not loop:
        _session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(
                limit=settings.UPSTREAM_MAX_CONNECTIONS, limit_per_host=0, ttl_dns_cache=60
            ),
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=settings.UPSTREAM_CONNECT_TIMEOUT,
                sock_read=settings.UPSTREAM_READ_TIMEOUT,
            ),
            # Never keep an upstream's cookies: they would be shared by every caller.
            cookie_jar=aiohttp.DummyCookieJar(),
            headers={"User-Agent": USER_AGENT},
            trust_env=settings.UPSTREAM_PROXY_FROM_ENV,
        )
    return _session


def timeout(read_seconds: float | None) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(
        total=None,
        sock_connect=settings.UPSTREAM_CONNECT_TIMEOUT,
        sock_read=read_seconds or settings.UPSTREAM_READ_TIMEOUT,
    )


async def close() -> None:
    global _session
    if _session is not None and not _session.closed:
        await _session.close()
    _session = None


def retry_after_seconds(value: str | None) -> float | None:
    """A `Retry-After` header in seconds from now: delta-seconds or an HTTP date; None when
    absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        return None
    return max(0.0, moment.timestamp() - time.time())
