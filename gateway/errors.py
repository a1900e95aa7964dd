"""Errors the gateway answers with, rendered in the caller's own API format."""

from collections.abc import Callable
from typing import Any

import orjson
from django.http import HttpResponse


class GatewayError(Exception):
    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.code = code
        self.headers = headers or {}
        # Set for a provider's failure (gateway/proxy.py), read by routing (gateway/routing.py):
        self.outcome = ""  # what happened, in a word or two: "http_503", "connect_error"
        self.retryable = False  # another attempt may succeed: connect error, 408, 429, 5xx
        self.unhealthy = False  # counts against the route's breaker and health
        self.retry_after: float | None = None  # the provider's Retry-After, in seconds

    def upstream_failure(
        self, outcome: str, retryable: bool, unhealthy: bool, retry_after: float | None = None
    ) -> "GatewayError":
        self.outcome, self.retryable, self.unhealthy = outcome, retryable, unhealthy
        self.retry_after = retry_after
        return self


def bad_request(message: str, code: str = "invalid_request") -> GatewayError:
    return GatewayError(400, "invalid_request_error", message, code)


def unauthorized(message: str, code: str) -> GatewayError:
    return GatewayError(401, "authentication_error", message, code)


def forbidden(message: str, code: str) -> GatewayError:
    return GatewayError(403, "permission_error", message, code)


def not_found(message: str, code: str = "not_found") -> GatewayError:
    return GatewayError(404, "invalid_request_error", message, code)


def too_large(limit: int) -> GatewayError:
    return GatewayError(
        413,
        "invalid_request_error",
        f"The request body is larger than this gateway accepts ({limit} bytes).",
        "request_too_large",
    )


def upstream_error(message: str, code: str = "upstream_error") -> GatewayError:
    return GatewayError(502, "upstream_error", message, code)


def upstream_timeout(message: str) -> GatewayError:
    return GatewayError(504, "timeout_error", message, "upstream_timeout")


def no_route(message: str) -> GatewayError:
    return GatewayError(503, "service_unavailable", message, "no_healthy_route")


def openai_body(error: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": error.kind,
            "param": None,
            "code": error.code,
        }
    }


def response(
    error: GatewayError, body: Callable[[GatewayError], dict[str, Any]] = openai_body
) -> HttpResponse:
    """The error as an HTTP response, its body in the shape `body` gives (the caller's format)."""
    reply = HttpResponse(
        orjson.dumps(body(error)), status=error.status, content_type="application/json"
    )
    for name, value in error.headers.items():
        reply[name] = value
    return reply
