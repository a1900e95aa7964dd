"""ASGI entry points: `thinkwatch.asgi:gateway` (port 3000) and `thinkwatch.asgi:console`
(port 3001)."""

import os
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinkwatch.settings")

import django

django.setup(set_prefix=False)

from django.core.handlers.asgi import ASGIHandler  # noqa: E402

from gateway import runtime  # noqa: E402
from gateway.handler import GatewayHandler  # noqa: E402

_gateway_http = GatewayHandler()


async def gateway(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await _gateway_http(scope, receive, send)
    elif scope["type"] == "lifespan":
        await runtime.lifespan(receive, send)
    else:
        raise ValueError(f"the gateway does not serve {scope['type']} connections")


def __getattr__(name: str) -> Any:
    # Built on first use, so the gateway process never loads the console's middleware.
    if name == "console":
        from channels.routing import ProtocolTypeRouter, URLRouter
        from channels.security.websocket import AllowedHostsOriginValidator
        from django.urls import path

        from audit import pipeline
        from audit.access import ConsoleAccessLog
        from audit.consumers import DashboardConsumer

        sockets = URLRouter([path("ws/dashboard", DashboardConsumer.as_asgi())])
        app = ProtocolTypeRouter(
            {
                "http": ConsoleAccessLog(ASGIHandler()),
                "websocket": AllowedHostsOriginValidator(sockets),
            }
        )
        # The console's own records (access, and whatever else it submits) are delivered
        # by its own pipeline thread; it also adopts segments of processes that died.
        pipeline.pipeline.start()
        globals()["console"] = app
        return app
    raise AttributeError(name)
