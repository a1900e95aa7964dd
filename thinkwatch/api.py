"""The management API: one NinjaAPI mounting each app's router.

Callers authenticate with a console session (admins) or with a `tw-` key that has the
`console` surface, as `Authorization: Bearer tw-...`. Until roles arrive, both must belong
to a staff account; only /mcp/connections, where each user manages their own, takes any
active user.
"""

from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import HttpError
from ninja.security import HttpBearer, SessionAuth

from accounts.models import ApiKey, KeyState, Surface, hash_key, looks_like_key

_USABLE = (KeyState.ACTIVE, KeyState.ROTATING)


class ConsoleKeyAuth(HttpBearer):
    def __init__(self, staff_only: bool = True) -> None:
        super().__init__()
        self.staff_only = staff_only

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        if not looks_like_key(token):
            return None
        key = ApiKey.objects.select_related("owner").filter(key_hash=hash_key(token)).first()
        if key is None or key.state() not in _USABLE:
            return None
        if Surface.CONSOLE not in key.surfaces:
            raise HttpError(403, "This API key does not have the console surface.")
        owner = key.owner
        if owner is None or not owner.is_active or (self.staff_only and not owner.is_staff):
            raise HttpError(403, "This API key's owner may not use the management API.")
        request.user = owner
        request.api_key = key  # type: ignore[attr-defined]
        return owner


class StaffSessionAuth(SessionAuth):
    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = request.user
        if user.is_authenticated and user.is_active and user.is_staff:
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
    auth=[ConsoleKeyAuth(), StaffSessionAuth()],
    urls_namespace="api",
)


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
    from mcpgw.api import router as mcp_servers
    from mcpgw.api_connections import router as mcp_connections
    from providers.api import models_router, providers_router
    from quotas.api import router as limits

    api.add_router("/providers", providers_router)
    api.add_router("/models", models_router)
    api.add_router("/keys", keys)
    api.add_router("/limits", limits)
    api.add_router("/mcp/servers", mcp_servers)
    # Each user's own connections: any active user, staff or not.
    own = [ConsoleKeyAuth(staff_only=False), UserSessionAuth()]
    api.add_router("/mcp/connections", mcp_connections, auth=own)


_mount()
