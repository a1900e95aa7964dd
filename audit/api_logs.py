"""Gateway, MCP, admin audit and access records through the management API, as the
console's log explorer shows them (audit/explorer.py): the same filters, the same scoping,
newest first.

Pages are keyset-based: pass a response's `next_cursor` as `cursor` for the next (older)
page; it is null on the last one. Gateway and MCP records need logs:read_own,
logs:read_team or logs:read_all (and show what that right covers); the admin audit log
and the access log need audit:read; captured MCP arguments need audit:read_bodies. With
ClickHouse as the store, a record's `id` is its sequence number in its family's chain.
"""

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.http import HttpRequest
from ninja import Field, Query, Router, Schema
from ninja.errors import HttpError

from accounts.access import Rights
from audit import explorer
from audit.explorer import FilterError, Filters

logs_router = Router(tags=["logs"])
audit_router = Router(tags=["audit"])


class PageQuery(Schema):
    since: datetime | None = Field(
        None, description="Records at or after (ISO 8601; UTC if no zone)."
    )
    until: datetime | None = Field(None, description="Records before.")
    user: str = Field("", description="A user's id, username or email.")
    key: str = Field("", description="A key's shown prefix, e.g. tw-1a2b3c4d.")
    cursor: str = Field("", description="`next_cursor` of the previous page.")
    limit: int = Field(explorer.PAGE_SIZE, ge=1, le=explorer.MAX_PAGE_SIZE)


class LogQuery(PageQuery):
    team: str = Field("", description="A team's id or name.")
    status: str = Field(
        "", description="Gateway: ok, error or an HTTP status. MCP: ok, denied, timeout, ..."
    )
    request_id: str = ""


class GatewayQuery(LogQuery):
    model: str = Field("", description="The model id the client asked for.")


class McpQuery(LogQuery):
    tool: str = Field("", description="The tool, prompt or resource URI called.")


class AuditQuery(PageQuery):
    action: str = Field(
        "", description='create, update, delete, or a named action; "key.*" for a family.'
    )
    object_type: str = Field("", description="app_label.model, e.g. providers.provider.")
    object: str = Field("", description="An object's id, or part of its name.")


class AccessQuery(PageQuery):
    status: str = Field("", description="ok, error or an HTTP status.")
    request: str = Field("", description="A request id, or the start of a path.")


class GatewayRecord(Schema):
    id: int
    request_id: str
    created_at: datetime
    user_id: int | None
    team_id: int | None
    api_key_id: int | None
    api_key_prefix: str
    surface: str
    ingress: str
    model: str
    provider_id: int | None
    provider: str
    upstream_model: str
    streamed: bool
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    weighted_tokens: int
    cost_usd: Decimal
    latency_ms: float
    ttft_ms: float | None
    status_code: int
    error_code: str
    error_message: str
    client_ip: str | None
    user_agent: str
    disconnected: bool
    usage_estimated: bool


class McpRecord(Schema):
    id: int
    request_id: str
    created_at: datetime
    user_id: int | None
    team_id: int | None
    api_key_id: int | None
    api_key_prefix: str
    session_id: str
    protocol_version: str
    method: str
    server_id: int | None
    server: str
    name: str
    upstream_name: str
    arguments: Any = Field(None, description="Only with audit:read_bodies; secrets redacted.")
    status: str
    error_code: int | None
    error_message: str
    latency_ms: float
    client_ip: str | None
    user_agent: str


class AuditRecord(Schema):
    id: int
    created_at: datetime
    action: str
    actor_id: int | None
    actor: str
    api_key_prefix: str
    via: str
    object_type: str
    object_id: str
    object_repr: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    detail: dict[str, Any]
    client_ip: str | None
    user_agent: str


class AccessRecord(Schema):
    id: int
    created_at: datetime
    port: str = Field(description="gateway or console")
    method: str
    path: str
    status_code: int
    latency_ms: float
    client_ip: str | None
    user_agent: str
    user_id: int | None
    request_id: str


class GatewayPage(Schema):
    items: list[GatewayRecord]
    next_cursor: str | None


class McpPage(Schema):
    items: list[McpRecord]
    next_cursor: str | None


class AuditPage(Schema):
    items: list[AuditRecord]
    next_cursor: str | None


class AccessPage(Schema):
    items: list[AccessRecord]
    next_cursor: str | None


def _page(request: HttpRequest, kind: str, query: PageQuery, **filters: Any) -> dict[str, Any]:
    given = {"since": query.since, "until": query.until, "user": query.user, "key": query.key}
    try:
        found = explorer.page(
            kind, request.user, Filters.parse(given | filters), query.cursor, query.limit
        )
    except FilterError as exc:
        raise HttpError(422, str(exc)) from None
    return {"items": found.rows, "next_cursor": found.next_cursor}


@logs_router.get("/gateway", response=GatewayPage)
def gateway_logs(request: HttpRequest, query: Query[GatewayQuery]) -> dict[str, Any]:
    """Gateway records, newest first."""
    return _page(
        request,
        "gateway",
        query,
        team=query.team,
        model=query.model,
        status=query.status,
        q=query.request_id,
    )


@logs_router.get("/mcp", response=McpPage)
def mcp_logs(request: HttpRequest, query: Query[McpQuery]) -> dict[str, Any]:
    """MCP records, newest first."""
    page = _page(
        request,
        "mcp",
        query,
        team=query.team,
        model=query.tool,
        status=query.status,
        q=query.request_id,
    )
    if not Rights.of(request.user).has("audit:read_bodies"):
        for row in page["items"]:
            row.arguments = None
    return page


@audit_router.get("", response=AuditPage)
def audit_events(request: HttpRequest, query: Query[AuditQuery]) -> dict[str, Any]:
    """The admin audit log, newest first: who changed what, before and after (secrets
    redacted), sign-ins, and events such as budget alerts. Needs `audit:read`."""
    return _page(
        request,
        "audit",
        query,
        action=query.action,
        object_type=query.object_type,
        q=query.object,
    )


@logs_router.get("/access", response=AccessPage)
def access_logs(request: HttpRequest, query: Query[AccessQuery]) -> dict[str, Any]:
    """HTTP requests on both ports (method, path, status, latency, address), newest first.
    Needs `audit:read`."""
    return _page(request, "access", query, status=query.status, q=query.request)
