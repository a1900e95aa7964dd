"""What the MCP gateway does for one JSON-RPC request, whichever protocol era carried it:
aggregate lists, route calls to their upstream, enforce tool rights and quotas, relay
progress, and write the MCP log."""

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from mcp_types.jsonrpc import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    REQUEST_TIMEOUT,
    URL_ELICITATION_REQUIRED,
)

from accounts.cache import KeyGrant
from gateway.errors import GatewayError
from mcpgw import catalog, credentials, records
from mcpgw.catalog import KINDS, Kind
from mcpgw.models import McpServer
from mcpgw.registry import ToolPolicy, registry
from mcpgw.upstream import Target, UpstreamError, UpstreamFailure, pool
from providers.pricing import FREE, Usage
from quotas import admission
from quotas.counters import Cost

logger = logging.getLogger(__name__)

# The gateway's own JSON-RPC error codes (implementation-defined server errors; the
# protocol's are -32020 and below). docs/mcp.md lists them.
ACCESS_DENIED = -32003
UPSTREAM_UNAVAILABLE = -32004
RATE_LIMITED = -32005
CANCELLED = -32800

_SPEC_META = "io.modelcontextprotocol/"
_NO_COST = Cost(tokens=0.0, usd=0.0)

Notify = Callable[[dict[str, Any]], Awaitable[None]]


class Reply(Exception):
    """A JSON-RPC error answer; `status` is what the MCP log records."""

    def __init__(
        self,
        code: int,
        message: str,
        data: Any = None,
        *,
        status: str = "invalid",
        http_status: int = 200,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data
        self.status = status
        self.http_status = http_status

    def error(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            error["data"] = self.data
        return error


@dataclass
class Caller:
    grant: KeyGrant
    policy: ToolPolicy
    version: str
    modern: bool
    request_id: str
    client_ip: str | None
    user_agent: str
    session_id: str = ""

    @property
    def user_id(self) -> int:
        assert self.grant.owner_id is not None  # the endpoint refuses keys without an owner
        return self.grant.owner_id

    def record(self, method: str, name: str) -> records.Entry:
        grant = self.grant
        return records.Entry(
            request_id=self.request_id,
            user_id=grant.owner_id,
            team_id=grant.team_id,
            api_key_id=grant.id,
            api_key_prefix=grant.prefix,
            session_id=self.session_id,
            protocol_version=self.version,
            method=method,
            name=name[:300],
            client_ip=self.client_ip,
            user_agent=self.user_agent[:512],
        )


class _Quota:
    """What the quotas engine needs of a request (see gateway.accounting.Call)."""

    __slots__ = ("grant", "price", "quota", "usage")

    def __init__(self, grant: KeyGrant) -> None:
        self.grant = grant
        self.quota: Any = None
        self.price = FREE
        self.usage = Usage()

    def cost(self) -> float:
        return 0.0


async def dispatch(
    caller: Caller, method: str, params: dict[str, Any], notify: Notify | None
) -> dict[str, Any]:
    kind = KINDS.get(method)
    if kind is not None:
        return await list_items(caller, kind, params.get("cursor"))
    if method == "tools/call":
        return await call(caller, "tools/call", "name", params, notify)
    if method == "prompts/get":
        return await call(caller, "prompts/get", "name", params, notify)
    if method == "resources/read":
        return await call(caller, "resources/read", "uri", params, notify)
    raise Reply(METHOD_NOT_FOUND, f"Method not found: {method}", http_status=404)


# --- lists ---------------------------------------------------------------------------


def visible(caller: Caller, server: McpServer, kind: Kind, item: dict[str, Any]) -> bool:
    if kind.uri:
        return caller.policy.allows(f"{server.prefix}{catalog.SEPARATOR}*")
    return caller.policy.allows(item[kind.key])


async def list_items(caller: Caller, kind: Kind, cursor: object) -> dict[str, Any]:
    servers = await registry.servers()
    gathered = await asyncio.gather(
        *(_server_items(caller, server, kind) for server in servers), return_exceptions=True
    )
    items: list[dict[str, Any]] = []
    for server, result in zip(servers, gathered, strict=True):
        if isinstance(result, BaseException):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if not isinstance(result, credentials.CredentialError):
                logger.warning(
                    "mcp.list_failed",
                    extra={"server": server.name, "method": kind.method, "error": str(result)},
                )
            continue
        for item in result:
            renamed = catalog.rename(server, kind, item)
            if renamed is not None and visible(caller, server, kind, renamed):
                items.append(renamed)
    try:
        return catalog.page(items, kind, cursor)
    except catalog.InvalidCursor as exc:
        raise Reply(INVALID_PARAMS, str(exc), http_status=400) from None


async def _server_items(caller: Caller, server: McpServer, kind: Kind) -> list[dict[str, Any]]:
    key = (server.pk, caller.user_id, kind.method)
    cached = catalog.lists.get(key)
    if cached is not None:
        return cached
    target = await target_for(server, caller)
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(100):
        try:
            result = await pool().request(
                target, kind.method, {"cursor": cursor} if cursor else None
            )
        except UpstreamError as exc:
            if exc.code == METHOD_NOT_FOUND:
                break  # the server has none of these
            raise
        page = result.get(kind.field)
        if isinstance(page, list):
            items.extend(item for item in page if isinstance(item, dict))
        cursor = result.get("nextCursor")
        if not cursor:
            break
    catalog.lists.put(key, items)
    return items


# --- calls ---------------------------------------------------------------------------


async def target_for(server: McpServer, caller: Caller) -> Target:
    headers = await credentials.upstream_headers(server, caller.user_id)
    return Target(
        server_id=server.pk,
        name=server.name,
        url=server.url,
        headers=tuple(sorted(headers.items())),
        timeout=server.timeout_seconds,
        user_id=caller.user_id,
    )


async def _resolve(method: str, key: str, value: str) -> tuple[McpServer, str]:
    split = catalog.split_uri(value) if key == "uri" else catalog.split_name(value)
    server = await registry.server_by_prefix(split[0]) if split else None
    if server is None or split is None:
        what = {"tools/call": "tool", "prompts/get": "prompt"}.get(method, "resource")
        raise Reply(INVALID_PARAMS, f"Unknown {what}: {value}")
    return server, split[1]


def _forwarded_meta(params: dict[str, Any]) -> dict[str, Any] | None:
    """The caller's `_meta` minus what belongs to its own connection (protocol envelope,
    progress token: the upstream connection sets its own)."""
    meta = params.get("_meta")
    if not isinstance(meta, dict):
        return None
    kept = {k: v for k, v in meta.items() if k != "progressToken" and not k.startswith(_SPEC_META)}
    return kept or None


async def call(
    caller: Caller, method: str, key: str, params: dict[str, Any], notify: Notify | None
) -> dict[str, Any]:
    value = params.get(key)
    if not isinstance(value, str) or not value:
        raise Reply(INVALID_PARAMS, f"{method} needs a '{key}' string.")
    entry = caller.record(method, value)
    if method != "resources/read":
        entry.arguments(params.get("arguments"))
    quota = _Quota(caller.grant)
    try:
        server, upstream_value = await _resolve(method, key, value)
        entry.set(server_id=server.pk, server=server.name[:100], upstream_name=upstream_value[:300])
        allowed_as = value if key == "name" else f"{server.prefix}{catalog.SEPARATOR}*"
        if not caller.policy.allows(allowed_as):
            raise Reply(
                ACCESS_DENIED,
                f"Access denied: your key or role does not allow '{value}'.",
                status="denied",
            )
        if method == "tools/call":
            await _admit(quota, server)
        try:
            target = await target_for(server, caller)
        except credentials.CredentialMissing as exc:
            raise _credential_missing(exc) from None
        except credentials.CredentialError as exc:
            raise Reply(UPSTREAM_UNAVAILABLE, str(exc), status="credential_missing") from None
        forwarded = {k: v for k, v in params.items() if k != "_meta"}
        forwarded[key] = upstream_value
        meta = _forwarded_meta(params)
        if meta:
            forwarded["_meta"] = meta
        progress = _progress_relay(params, notify)
        result = await _ask(target, method, forwarded, progress)
        if method == "tools/call" and result.get("isError") is True:
            entry.set(status="tool_error")
        if method == "resources/read":
            result = _rename_contents(server, result)
        entry.result(result)
        return result
    except Reply as reply:
        entry.fail(reply.status, reply.code, reply.message)
        raise
    except asyncio.CancelledError:
        entry.fail("cancelled", CANCELLED, "The client cancelled the request.")
        raise
    finally:
        entry.finish()
        admission.settle(quota)


async def _admit(quota: _Quota, server: McpServer) -> None:
    try:
        await admission.admit(quota, "mcp_gateway", (("mcp_server", server.pk),), _NO_COST)
    except GatewayError as exc:
        retry = exc.headers.get("Retry-After")
        data = {"retryAfter": int(retry)} if retry and retry.isdigit() else None
        raise Reply(RATE_LIMITED, exc.message, data, status="rate_limited") from None


def _credential_missing(exc: credentials.CredentialMissing) -> Reply:
    # 2025-11-25 URL elicitation: the client shows the user a link to open. Clients of
    # other revisions still get the link in the message.
    return Reply(
        URL_ELICITATION_REQUIRED,
        str(exc),
        {
            "elicitations": [
                {
                    "mode": "url",
                    "elicitationId": secrets.token_hex(8),
                    "url": exc.connect_url,
                    "message": f"Connect your account for '{exc.server_name}' in ThinkWatch.",
                }
            ]
        },
        status="credential_missing",
    )


def _progress_relay(params: dict[str, Any], notify: Notify | None) -> Any:
    meta = params.get("_meta")
    token = meta.get("progressToken") if isinstance(meta, dict) else None
    if notify is None or not isinstance(token, str | int) or isinstance(token, bool):
        return None

    async def relay(progress: float, total: float | None, message: str | None) -> None:
        notice: dict[str, Any] = {"progressToken": token, "progress": progress}
        if total is not None:
            notice["total"] = total
        if message is not None:
            notice["message"] = message
        await notify({"jsonrpc": "2.0", "method": "notifications/progress", "params": notice})

    return relay


async def _ask(
    target: Target, method: str, params: dict[str, Any], progress: Any
) -> dict[str, Any]:
    try:
        return await pool().request(target, method, params, progress)
    except UpstreamError as exc:
        raise Reply(exc.code, exc.message, exc.data, status="upstream_error") from None
    except UpstreamFailure as exc:
        if exc.timeout:
            raise Reply(REQUEST_TIMEOUT, str(exc), status="timeout") from None
        raise Reply(UPSTREAM_UNAVAILABLE, str(exc), status="upstream_error") from None


def _rename_contents(server: McpServer, result: dict[str, Any]) -> dict[str, Any]:
    contents = result.get("contents")
    if not isinstance(contents, list):
        return result
    renamed = [
        {**item, "uri": catalog.public_uri(server, item["uri"])}
        if isinstance(item, dict) and isinstance(item.get("uri"), str)
        else item
        for item in contents
    ]
    return {**result, "contents": renamed}
