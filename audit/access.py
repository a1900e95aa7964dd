"""Access records: one per HTTP request on either port (method, path, status, latency, client
address), through the audit pipeline. The query string is never recorded: clients put keys
there (Gemini's `?key=`)."""

import time
from datetime import UTC, datetime
from typing import Any

from django.conf import settings

from audit import pipeline
from thinkwatch import proxies

# Status recorded when the client left before the response was complete (nginx's 499).
CLIENT_CLOSED = 499


def header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return str(value.decode("latin-1"))
    return ""


def record(
    port: str,
    scope: dict[str, Any],
    status: int,
    started: float,
    *,
    client_ip: str | None = None,
    user_id: int | None = None,
    request_id: str = "",
) -> None:
    if not settings.AUDIT_ACCESS_LOG:
        return
    if client_ip is None:
        peer = scope["client"][0] if scope.get("client") else None
        client_ip = proxies.client_ip(peer, header(scope, b"x-forwarded-for"))
    pipeline.submit(
        "access",
        {
            "created_at": datetime.now(UTC),
            "port": port,
            "method": scope.get("method", "")[:8],
            "path": scope.get("path", "")[:2000],
            "status_code": status,
            "latency_ms": (time.perf_counter() - started) * 1000,
            "client_ip": client_ip,
            "user_agent": header(scope, b"user-agent")[:512],
            "user_id": user_id,
            "request_id": request_id[:128],
        },
    )


class ConsoleAccessLog:
    """ASGI wrapper for the console port: records every HTTP request it answers."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = CLIENT_CLOSED

        async def sending(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception:
            status = 500
            raise
        finally:
            record("console", scope, status, started, user_id=scope.get("tw.user_id"))
