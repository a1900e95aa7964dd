"""Who is acting, and from where: the context the admin audit log reads.

The console's middleware holds the request in a context variable while the request runs;
audit/changes.py records a change only while one is set, so the gateway, background jobs
and migrations write no admin audit rows. A management command that changes configuration
for someone sets one itself with `acting()`.

The actor is read from the request when a change happens, not when the request arrives:
the management API authenticates inside the view (a `tw-` key sets `request.user` and
`request.api_key` there).
"""

import ipaddress
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from audit.models import Via
from thinkwatch.proxies import request_ip


@dataclass(frozen=True)
class Origin:
    via: str
    request: HttpRequest | None = None
    user: Any = None  # who a command acts for; for a request, request.user at the time

    def fields(self) -> dict[str, Any]:
        """The AuditEvent fields that say who acted and from where."""
        request = self.request
        user = self.user if self.user is not None else getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            user = None
        key = getattr(request, "api_key", None)
        return {
            "actor_id": None if user is None else user.pk,
            "actor": "" if user is None else display_name(user),
            "api_key_prefix": key.prefix if key is not None else "",
            "client_ip": address(request) if request is not None else None,
            "user_agent": request.META.get("HTTP_USER_AGENT", "")[:512] if request else "",
            "via": self.via,
        }


_current: ContextVar[Origin | None] = ContextVar("audit_origin", default=None)


def current() -> Origin | None:
    return _current.get()


@contextmanager
def acting(
    user: Any = None, via: str = Via.COMMAND, request: HttpRequest | None = None
) -> Iterator[Origin]:
    """Record the changes made inside as made by `user` (a management command, a test)."""
    origin = Origin(via=via, request=request, user=user)
    token = _current.set(origin)
    try:
        yield origin
    finally:
        _current.reset(token)


def display_name(user: Any) -> str:
    return str(user.get_username())[:254]


def via_of(request: HttpRequest) -> str:
    return Via.API if request.path_info.startswith("/api/") else Via.CONSOLE


def address(request: HttpRequest) -> str | None:
    """The client's address, believing X-Forwarded-For only from THINKWATCH_TRUSTED_PROXIES
    (the gateway's rule). None for anything that is not an IP address."""
    found = request_ip(request)
    try:
        return str(ipaddress.ip_address(found)) if found else None
    except ValueError:
        return None


class AuditContextMiddleware:
    """Holds the request in the audit context while the console or the API handles it."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        with acting(via=via_of(request), request=request):
            response = self.get_response(request)
        _note_user(request)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        get_response: Callable[[HttpRequest], Awaitable[HttpResponseBase]] = self.get_response
        with acting(via=via_of(request), request=request):
            response = await get_response(request)
        _note_user(request)
        return response


def _note_user(request: HttpRequest) -> None:
    """Tell the access log (audit/access.py) who made the request, if the request already
    looked its user up (never a lookup of its own: that would query the database, and
    from the event loop at that)."""
    scope = getattr(request, "scope", None)
    user = getattr(request, "_cached_user", None)
    if scope is not None and user is not None and user.is_authenticated:
        scope["tw.user_id"] = user.pk
