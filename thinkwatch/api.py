"""The management API: one NinjaAPI mounting each app's router.

Callers authenticate with a console session or with a `tw-` key that has the `console`
surface, as `Authorization: Bearer tw-...`. Either way the account must hold a console
right somewhere; each operation then checks the permission it needs (docs/permissions.md),
the same check the console's pages make. /mcp/connections, where each user manages their
own, takes any active account.
"""

from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.security import HttpBearer, SessionAuth

from accounts.access import Denied, Rights
from accounts.models import ApiKey, KeyState, Surface, hash_key, looks_like_key

_USABLE = (KeyState.ACTIVE, KeyState.ROTATING)


class ConsoleKeyAuth(HttpBearer):
    def __init__(self, console_only: bool = True) -> None:
        super().__init__()
        self.console_only = console_only

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        if not looks_like_key(token):
            return None
        key = ApiKey.objects.select_related("owner").filter(key_hash=hash_key(token)).first()
        if key is None or key.state() not in _USABLE:
            return None
        if Surface.CONSOLE not in key.surfaces:
            raise HttpError(403, "This API key does not have the console surface.")
        owner = key.owner
        if owner is None or not owner.is_active:
            raise HttpError(403, "This API key's owner may not use the management API.")
        if self.console_only and not Rights.of(owner).console:
            raise HttpError(403, "This API key's owner holds no console permission.")
        request.user = owner
        request.api_key = key  # type: ignore[attr-defined]
        return owner


class ConsoleSessionAuth(SessionAuth):
    """A signed-in account holding a console right somewhere."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = request.user
        if user.is_authenticated and user.is_active and Rights.of(user).console:
            return user
        return None


class UserSessionAuth(SessionAuth):
    """Any active user, for what each user manages of their own (their MCP connections)."""

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = request.user
        if user.is_authenticated and user.is_active:
            return user
        return None


api = NinjaAPI(
    title="ThinkWatch management API",
    version="1",
    description=__doc__,
    auth=[ConsoleKeyAuth(), ConsoleSessionAuth()],
    urls_namespace="api",
)


@api.exception_handler(Denied)
def denied(request: HttpRequest, exc: Denied) -> HttpResponse:
    return api.create_response(request, {"detail": str(exc)}, status=403)


@api.exception_handler(ValidationError)
def validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    """Model validation (uniqueness, URLs, ...) as 422 in ninja's own error shape."""
    if hasattr(exc, "error_dict"):
        detail = [
            {"type": "value_error", "loc": ["body", "payload", field], "msg": message}
            for field, messages in exc.message_dict.items()
            for message in messages
        ]
    else:
        detail = [{"type": "value_error", "loc": ["body"], "msg": m} for m in exc.messages]
    return api.create_response(request, {"detail": detail}, status=422)


def _mount() -> None:
    from accounts.api import router as keys
    from accounts.api_people import teams_router as teams
    from accounts.api_people import users_router as users
    from accounts.api_roles import router as roles
    from mcpgw.api import router as mcp_servers
    from mcpgw.api_connections import all_router as mcp_user_connections
    from mcpgw.api_connections import router as mcp_connections
    from providers.api import models_router, providers_router
    from quotas.api import router as limits

    api.add_router("/providers", providers_router)
    api.add_router("/models", models_router)
    api.add_router("/keys", keys)
    api.add_router("/users", users)
    api.add_router("/teams", teams)
    api.add_router("/roles", roles)
    api.add_router("/limits", limits)
    api.add_router("/mcp/servers", mcp_servers)
    api.add_router("/mcp/user-connections", mcp_user_connections)
    api.add_router("/sso/oidc", "accounts.api_oidc.router")
    api.add_router("/settings", "accounts.api_settings.router")
    api.add_router("/guardrails", "gateway.api_guardrails.router")
    api.add_router("/cache", "gateway.api_cache.router")
    api.add_router("/usage", "audit.api_usage.router")
    api.add_router("/logs", "audit.api_logs.logs_router")
    api.add_router("/logs", "audit.api_bodies.router")
    api.add_router("/audit", "audit.api_logs.audit_router")
    api.add_router("/health", "thinkwatch.health.router")
    # Each user's own connections: any active user, staff or not.
    own = [ConsoleKeyAuth(console_only=False), UserSessionAuth()]
    api.add_router("/mcp/connections", mcp_connections, auth=own)


_mount()
