"""`/api/mcp/servers`: the upstream MCP servers the gateway federates."""

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from ninja import Field, Router, Schema
from ninja.responses import Status

from accounts.runtime import setting
from mcpgw import logic
from mcpgw.models import McpServer
from thinkwatch.guard import needs

router = Router(tags=["mcp servers"])

AuthModeName = Literal["none", "static_header", "per_user_token", "per_user_oauth"]


class McpServerOut(Schema):
    id: int
    name: str
    prefix: str
    url: str
    description: str
    auth_mode: str
    header_name: str
    header_scheme: str
    has_static_secret: bool
    oauth_issuer: str
    oauth_authorization_endpoint: str
    oauth_token_endpoint: str
    oauth_client_id: str
    has_client_secret: bool
    oauth_scopes: str
    timeout_seconds: float
    enabled: bool
    created_at: datetime
    updated_at: datetime


class McpServerIn(Schema):
    name: str = Field(..., min_length=1, max_length=100)
    prefix: str = Field(
        ...,
        description="Tools appear to clients as <prefix>__<tool>: lowercase letters, digits "
        "and single underscores, short enough that names fit 64 characters.",
    )
    url: str = Field(..., description="The server's Streamable HTTP endpoint.")
    description: str = ""
    auth_mode: AuthModeName = "none"
    header_name: str = "Authorization"
    header_scheme: str = "Bearer"
    static_secret: str = Field(
        "", description="Write-only; stored encrypted, never returned. static_header needs it."
    )
    oauth_issuer: str = Field(
        "",
        description="per_user_oauth: the authorization server. Leave it and both endpoints "
        "empty to discover them from the server's metadata when a user connects.",
    )
    oauth_authorization_endpoint: str = ""
    oauth_token_endpoint: str = ""
    oauth_client_id: str = ""
    oauth_client_secret: str = Field(
        "", description="Write-only; stored encrypted, never returned. Empty: a public client."
    )
    oauth_scopes: str = ""
    timeout_seconds: float = Field(
        default_factory=lambda: float(setting("mcp.default_timeout_seconds")),
        description="Default: the mcp.default_timeout_seconds setting.",
    )
    enabled: bool = True


class McpServerPatch(Schema):
    name: str | None = Field(None, min_length=1, max_length=100)
    prefix: str | None = Field(
        None, description="Allowed; renames every tool of the server (clients see new names)."
    )
    url: str | None = None
    description: str | None = None
    auth_mode: AuthModeName | None = None
    header_name: str | None = None
    header_scheme: str | None = None
    static_secret: str | None = Field(None, description="Write-only. An empty string removes it.")
    oauth_issuer: str | None = None
    oauth_authorization_endpoint: str | None = None
    oauth_token_endpoint: str | None = None
    oauth_client_id: str | None = None
    oauth_client_secret: str | None = Field(
        None, description="Write-only. An empty string removes it."
    )
    oauth_scopes: str | None = None
    timeout_seconds: float | None = None
    enabled: bool | None = None


def _save(server: McpServer, changes: dict[str, Any]) -> McpServer:
    if "static_secret" in changes:
        server.set_static_secret(changes.pop("static_secret") or "")
    if "oauth_client_secret" in changes:
        server.set_client_secret(changes.pop("oauth_client_secret") or "")
    for field, value in changes.items():
        setattr(server, field, value)
    return logic.save_server(server, urls=[f for f in logic.CHECKED_URLS if f in changes])


@router.get("", response=list[McpServerOut])
@needs("mcp_servers:read")
def list_servers(request: HttpRequest) -> list[McpServer]:
    return list(McpServer.objects.all())


@router.post("", response={201: McpServerOut})
@needs("mcp_servers:create")
def create_server(request: HttpRequest, payload: McpServerIn) -> Status[McpServer]:
    """Register a server. Its URL and OAuth endpoints must not point at private, loopback or
    metadata addresses unless their range is allow-listed."""
    return Status(201, _save(McpServer(), payload.dict()))


@router.get("/{server_id}", response=McpServerOut)
@needs("mcp_servers:read")
def get_server(request: HttpRequest, server_id: int) -> McpServer:
    return get_object_or_404(McpServer, pk=server_id)


@router.patch("/{server_id}", response=McpServerOut)
@needs("mcp_servers:update")
def update_server(request: HttpRequest, server_id: int, payload: McpServerPatch) -> McpServer:
    """Change a server; omitted fields, secrets included, stay as they are."""
    server = get_object_or_404(McpServer, pk=server_id)
    return _save(server, payload.dict(exclude_unset=True))


@router.delete("/{server_id}", response={204: None})
@needs("mcp_servers:delete")
def delete_server(request: HttpRequest, server_id: int) -> Status[None]:
    """Remove a server with the credentials users hold for it."""
    get_object_or_404(McpServer, pk=server_id).delete()
    return Status(204, None)
