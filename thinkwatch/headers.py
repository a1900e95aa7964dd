"""Security headers on every console response, and who may call /api/ from a browser.

Django's SecurityMiddleware already sends X-Content-Type-Options, Referrer-Policy and
Cross-Origin-Opener-Policy (settings.py), and XFrameOptionsMiddleware X-Frame-Options.
This adds the Content-Security-Policy, Permissions-Policy, Cross-Origin-Resource-Policy
and, when THINKWATCH_HSTS_SECONDS is set (by default with THINKWATCH_SECURE_COOKIES),
Strict-Transport-Security (docs/decisions.md).

CORS (django-cors-headers, /api/ only): the allowed origins are the runtime setting
`security.cors_allowed_origins`, read on each request through the package's documented
`check_request_enabled` signal, so a change applies without a restart.
"""

import functools
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from asgiref.sync import iscoroutinefunction
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.decorators import sync_and_async_middleware

from accounts.runtime import setting

_FIXED = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    # data: for the small images inlined in the admin's and the API docs' stylesheets.
    "img-src": "'self' data:",
    "font-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}
# Chrome applies form-action to the redirect that answers a form too: a form whose answer
# sends the browser to another site (an OAuth authorization server) needs this.
_FORM_REDIRECTS_ANYWHERE = "'self' https: http:"

PERMISSIONS_POLICY = ", ".join(
    [
        *(
            f"{feature}=()"
            for feature in (
                "accelerometer",
                "camera",
                "geolocation",
                "gyroscope",
                "magnetometer",
                "microphone",
                "payment",
                "usb",
            )
        ),
        "clipboard-write=(self)",  # the copy buttons (static/thinkwatch/copy.js)
    ]
)


def content_security_policy(request: HttpRequest, response: HttpResponseBase) -> str:
    directives = dict(_FIXED)
    # 'self' covers same-origin websockets in current browsers; older ones need the origin.
    try:
        host = request.get_host()
    except DisallowedHost:
        host = ""
    directives["connect-src"] = f"'self' ws://{host} wss://{host}" if host else "'self'"
    if getattr(response, "form_redirects_anywhere", False):
        directives["form-action"] = _FORM_REDIRECTS_ANYWHERE
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def add_headers(request: HttpRequest, response: HttpResponseBase) -> None:
    response.headers.setdefault(
        "Content-Security-Policy", content_security_policy(request, response)
    )
    response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
    response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
    if settings.SECURE_HSTS_SECONDS:
        # Browsers ignore the header over plain HTTP, so it is safe to send behind a TLS
        # proxy, where request.is_secure() cannot tell.
        response.headers.setdefault(
            "Strict-Transport-Security", f"max-age={settings.SECURE_HSTS_SECONDS}"
        )


@sync_and_async_middleware
def security_headers(get_response: Callable[[HttpRequest], Any]) -> Callable[..., Any]:
    if iscoroutinefunction(get_response):

        async def middleware_async(request: HttpRequest) -> HttpResponseBase:
            response = await get_response(request)
            add_headers(request, response)
            return response

        return middleware_async

    def middleware(request: HttpRequest) -> HttpResponseBase:
        response = get_response(request)
        add_headers(request, response)
        return response

    return middleware


def form_redirects_anywhere(
    view: Callable[..., HttpResponse],
) -> Callable[..., HttpResponse]:
    """For a page whose form is answered with a redirect to another site."""

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        response.form_redirects_anywhere = True  # type: ignore[attr-defined]
        return response

    return wrapped


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url.strip())
    return parts.scheme.lower(), parts.netloc.lower()


def cors_allowed(sender: Any, request: HttpRequest, **kwargs: Any) -> bool:
    """django-cors-headers' check_request_enabled receiver: a browser on a configured
    origin may call /api/ (with a tw- key; no cookies: CORS_ALLOW_CREDENTIALS is off)."""
    origin = request.headers.get("origin")
    if not origin or not request.path_info.startswith("/api/"):
        return False
    return _origin(origin) in {_origin(o) for o in setting("security.cors_allowed_origins")}
