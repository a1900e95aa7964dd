"""`/api/mcp/connections`: the caller's own connections to upstream MCP servers. Any active
user manages theirs (thinkwatch/api.py mounts this router with that auth); tokens go in and
never come out."""

from datetime import datetime

from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja import Field, Router, Schema
from ninja.errors import HttpError
from ninja.responses import Status

from mcpgw import credentials, oauth
from mcpgw.console_views import callback_url, per_user_server
from mcpgw.models import AuthMode, McpCredential
from thinkwatch.guard import needs

router = Router(tags=["mcp connections"])


class ConnectionOut(Schema):
    server_id: int
    server_name: str
    kind: str
    scopes: str
    expires_at: datetime | None
    connected_at: datetime = Field(..., alias="created_at")
    updated_at: datetime

    @staticmethod
    def resolve_server_name(connection: McpCredential) -> str:
        return connection.server.name


class TokenIn(Schema):
    token: str = Field(..., min_length=1, description="Write-only; stored encrypted.")


class AuthorizeOut(Schema):
    authorize_url: str = Field(..., description="Open it in a browser signed in to the console.")


def _caller(request: HttpRequest) -> User:
    return request.user  # type: ignore[return-value]  # authenticated by the router's auth


@router.get("", response=list[ConnectionOut])
def list_connections(request: HttpRequest) -> list[McpCredential]:
    mine = McpCredential.objects.filter(user=_caller(request)).select_related("server")
    return list(mine.order_by("server__name"))


@router.put("/{server_id}", response=ConnectionOut)
def set_token(request: HttpRequest, server_id: int, payload: TokenIn) -> McpCredential:
    """Store (or replace) your personal token for a per_user_token server."""
    server = per_user_server(server_id)
    if server.auth_mode != AuthMode.PER_USER_TOKEN:
        raise HttpError(409, f"'{server.name}' connects with OAuth: POST .../authorize.")
    return credentials.save_token(_caller(request), server, payload.token)


@router.delete("/{server_id}", response={204: None})
def remove_connection(request: HttpRequest, server_id: int) -> Status[None]:
    server = per_user_server(server_id)
    if not credentials.remove_connection(_caller(request), server):
        raise HttpError(404, f"You have no connection to '{server.name}'.")
    return Status(204, None)


@router.post("/{server_id}/authorize", response=AuthorizeOut)
def authorize(request: HttpRequest, server_id: int) -> dict[str, str]:
    """Start connecting a per_user_oauth server; the link works once, for ten minutes."""
    server = per_user_server(server_id)
    if server.auth_mode != AuthMode.PER_USER_OAUTH:
        raise HttpError(409, f"'{server.name}' takes a personal token: PUT it instead.")
    try:
        url = oauth.start(_caller(request), server, callback_url(request))
    except oauth.OAuthError as exc:
        raise HttpError(502, exc.description) from None
    return {"authorize_url": url}


# --- Everyone's connections, for admins ----------------------------------------------------

all_router = Router(tags=["mcp connections"])


class UserConnectionOut(ConnectionOut):
    id: int
    user_id: int


@all_router.get("", response=list[UserConnectionOut])
@needs("mcp_connections:read")
def list_user_connections(
    request: HttpRequest, user_id: int | None = None, server_id: int | None = None
) -> list[McpCredential]:
    """Every user's connections (never their tokens)."""
    connections = McpCredential.objects.select_related("server").order_by("user_id", "server_id")
    if user_id is not None:
        connections = connections.filter(user_id=user_id)
    if server_id is not None:
        connections = connections.filter(server_id=server_id)
    return list(connections)


@all_router.delete("/{connection_id}", response={204: None})
@needs("mcp_connections:manage")
def remove_user_connection(request: HttpRequest, connection_id: int) -> Status[None]:
    """Remove someone's connection: their next call to that server asks them to connect
    again."""
    deleted, _ = McpCredential.objects.filter(pk=connection_id).delete()
    if not deleted:
        raise HttpError(404, "Not Found")
    return Status(204, None)
