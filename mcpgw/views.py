"""`/mcp` on the gateway port: MCP's Streamable HTTP transport, in both protocol eras.

- Session-based (2025-03-26 … 2025-11-25): `initialize` negotiates a version and opens a
  session (`Mcp-Session-Id`), bound to the calling key; later requests must carry it
  (missing → 400, unknown or another key's → 404); `DELETE` ends it; `GET` opens the
  stream that carries `notifications/*/list_changed`; `notifications/cancelled` cancels
  a request in flight.
- Stateless (2026-07-28): every POST carries its version and capabilities in `_meta` and
  the `MCP-Protocol-Version`, `Mcp-Method` and `Mcp-Name` headers, validated with the
  SDK's own ladder (-32020 on a mismatch, -32022 for an unknown version); `server/discover`
  describes the gateway; closing the response stream cancels the request.

The era is chosen as the SDK's server does: an `MCP-Protocol-Version` header that names no
session-era version means the stateless era (an unknown one is refused there).
"""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import orjson
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.http.response import HttpResponseBase
from mcp.shared.inbound import (
    ERROR_CODE_HTTP_STATUS,
    InboundLadderRejection,
    classify_inbound_request,
    find_duplicated_routing_header,
    validate_mcp_param_headers,
)
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp_types.jsonrpc import INVALID_REQUEST, METHOD_NOT_FOUND, PARSE_ERROR
from mcp_types.version import (
    HANDSHAKE_PROTOCOL_VERSIONS,
    LATEST_HANDSHAKE_VERSION,
    MODERN_PROTOCOL_VERSIONS,
)

from gateway.auth import authenticate
from gateway.errors import GatewayError
from gateway.proxy import EventStream
from mcpgw import catalog, sessions, upstream
from mcpgw.registry import policy_of, registry
from mcpgw.service import CANCELLED, Caller, Reply, dispatch
from thinkwatch.lib import sse

SERVER_INFO = {"name": "thinkwatch", "title": "ThinkWatch MCP gateway", "version": "1.0"}
CAPABILITIES = {
    "tools": {"listChanged": True},
    "resources": {"listChanged": True},
    "prompts": {"listChanged": True},
}
INSTRUCTIONS = (
    "Tools, resources and prompts of the MCP servers your organisation connected, each "
    "named <server prefix>__<name>."
)
_LIST_CHANGED = (
    "notifications/tools/list_changed",
    "notifications/resources/list_changed",
    "notifications/prompts/list_changed",
)
_CACHEABLE = {
    *("tools/list", "prompts/list", "resources/list", "resources/templates/list"),
    *("resources/read", "server/discover"),
}
_KEEPALIVE_SECONDS = 15.0

registry.subscribe(lambda: sessions.local.notify_all(_LIST_CHANGED))


def _on_upstream_change(server_id: int, kind: str) -> None:
    catalog.lists.invalidate(server_id, f"{kind}/list")
    if kind == "resources":
        catalog.lists.invalidate(server_id, "resources/templates/list")
    sessions.local.notify_all((f"notifications/{kind}/list_changed",))


upstream.listeners.append(_on_upstream_change)


# --- responses -----------------------------------------------------------------------


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(
        orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def _error(msg_id: Any, code: int, message: str, status: int, data: Any = None) -> HttpResponse:
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return _json({"jsonrpc": "2.0", "id": msg_id, "error": error}, status)


def _empty(status: int, headers: dict[str, str] | None = None) -> HttpResponse:
    return HttpResponse(status=status, headers=headers)


def _event(message: dict[str, Any]) -> bytes:
    return sse.encode(orjson.dumps(message), "message")


class Exchange:
    """One request answered as a stream: notifications while it runs, then its response.
    Closing the stream (the client left) cancels the work."""

    def __init__(self, work: Callable[["Exchange"], Awaitable[dict[str, Any]]]) -> None:
        self._work = work
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.task: asyncio.Task[None] | None = None

    async def notify(self, message: dict[str, Any]) -> None:
        await self._queue.put(message)

    async def _run(self) -> None:
        try:
            await self._queue.put(await self._work(self))
        finally:
            await self._queue.put(None)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        if self.task is None:
            self.start()
        while True:
            message = await self._queue.get()
            if message is None:
                return
            yield _event(message)

    def close(self) -> None:
        if self.task is not None and not self.task.done():
            self.task.cancel()


# --- the endpoint --------------------------------------------------------------------


def _origin_refused(request: HttpRequest) -> bool:
    origin = request.META.get("HTTP_ORIGIN")
    if not origin:
        return False
    if origin in settings.MCP_ALLOWED_ORIGINS:
        return False
    host = request.META.get("HTTP_HOST", "")
    return urlsplit(origin).netloc.lower() != host.lower() or not host


def _accepts(request: HttpRequest) -> tuple[bool, bool]:
    accept = request.META.get("HTTP_ACCEPT", "").lower()
    anything = "*/*" in accept or not accept
    return anything or "application/json" in accept, anything or "text/event-stream" in accept


async def endpoint(request: HttpRequest) -> HttpResponseBase:
    if _origin_refused(request):
        return _error(None, INVALID_REQUEST, "Origin not allowed.", 403)
    try:
        grant = await authenticate(request.META, "mcp_gateway")
    except GatewayError as exc:
        response = _error(None, INVALID_REQUEST, exc.message, exc.status)
        if exc.status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="ThinkWatch"'
        return response
    if grant.owner_id is None:
        return _error(
            None, INVALID_REQUEST, "The MCP gateway needs a key that belongs to a user.", 403
        )
    version = request.META.get("HTTP_MCP_PROTOCOL_VERSION")
    if version is not None and version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return await _modern(request, grant)
    return await _legacy(request, grant)


async def _caller(request: HttpRequest, grant: Any, version: str, modern: bool) -> Caller:
    patterns = await registry.role_patterns(grant.owner_id, grant.team_id)
    return Caller(
        grant=grant,
        policy=policy_of(patterns, grant.mcp_tools),
        version=version,
        modern=modern,
        request_id=request.request_id,  # type: ignore[attr-defined]
        client_ip=request.client_ip,  # type: ignore[attr-defined]
        user_agent=request.META.get("HTTP_USER_AGENT", ""),
    )


def _parse(request: HttpRequest) -> dict[str, Any] | HttpResponse:
    content_type = request.META.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        return _error(None, INVALID_REQUEST, "Send the message as application/json.", 415)
    try:
        body = orjson.loads(request.body)
    except orjson.JSONDecodeError:
        return _error(None, PARSE_ERROR, "Parse error: the body is not JSON.", 400)
    if isinstance(body, list):
        return _error(None, INVALID_REQUEST, "Batches are not supported: send one message.", 400)
    if not isinstance(body, dict) or body.get("jsonrpc") != "2.0":
        return _error(None, INVALID_REQUEST, "Not a JSON-RPC 2.0 message.", 400)
    method = body.get("method")
    if "id" in body and method is not None and not isinstance(method, str):
        return _error(body.get("id"), INVALID_REQUEST, "The method must be a string.", 400)
    params = body.get("params", {})
    if params is not None and not isinstance(params, dict):
        return _error(body.get("id"), INVALID_REQUEST, "params must be an object.", 400)
    return body


# --- session-based era ---------------------------------------------------------------


async def _legacy(request: HttpRequest, grant: Any) -> HttpResponseBase:
    if request.method == "GET":
        return await _listen(request, grant)
    if request.method == "DELETE":
        return await _end(request, grant)
    if request.method != "POST":
        return _empty(405, {"Allow": "GET, POST, DELETE"})
    accepts_json, accepts_sse = _accepts(request)
    if not (accepts_json or accepts_sse):
        return _error(None, INVALID_REQUEST, "Accept application/json or text/event-stream.", 406)
    body = _parse(request)
    if isinstance(body, HttpResponse):
        return body
    method, msg_id = body.get("method"), body.get("id")
    if method == "initialize":
        return await _initialize(request, grant, body)
    session = await _session_of(request, grant, msg_id)
    if isinstance(session, HttpResponse):
        return session
    if method is None or "id" not in body:  # a notification, or a response to us
        if method == "notifications/cancelled":
            params = body.get("params") or {}
            sessions.local.cancel(session.id, params.get("requestId"))
        return _empty(202)
    caller = await _caller(request, grant, session.version, modern=False)
    caller.session_id = session.id
    params = body.get("params") or {}
    if method == "ping":
        return _json({"jsonrpc": "2.0", "id": msg_id, "result": {}})
    streamed = accepts_sse and (not accepts_json or _wants_progress(params))
    return await _answer(caller, msg_id, method, params, streamed, session.id)


async def _initialize(request: HttpRequest, grant: Any, body: dict[str, Any]) -> HttpResponse:
    params = body.get("params") or {}
    requested = params.get("protocolVersion")
    version = requested if requested in HANDSHAKE_PROTOCOL_VERSIONS else LATEST_HANDSHAKE_VERSION
    session = sessions.Session(id=sessions.new_id(), key_id=grant.id, version=version)
    await sessions.store().put(session)
    result = {
        "protocolVersion": version,
        "capabilities": CAPABILITIES,
        "serverInfo": SERVER_INFO,
        "instructions": INSTRUCTIONS,
    }
    return _json(
        {"jsonrpc": "2.0", "id": body.get("id"), "result": result},
        headers={"Mcp-Session-Id": session.id},
    )


async def _session_of(
    request: HttpRequest, grant: Any, msg_id: Any = None
) -> sessions.Session | HttpResponse:
    """The request's session; another key's session is as unknown as a made-up one."""
    session_id = request.META.get("HTTP_MCP_SESSION_ID")
    if not session_id:
        return _error(msg_id, INVALID_REQUEST, "Missing Mcp-Session-Id: initialize first.", 400)
    session = await sessions.store().get(session_id)
    if session is None or session.key_id != grant.id:
        return _error(msg_id, INVALID_REQUEST, "Session not found: initialize a new one.", 404)
    return session


async def _end(request: HttpRequest, grant: Any) -> HttpResponse:
    session = await _session_of(request, grant)
    if isinstance(session, HttpResponse):
        return session
    await sessions.store().delete(session.id)
    sessions.local.end(session.id)
    return _empty(204)


async def _listen(request: HttpRequest, grant: Any) -> HttpResponseBase:
    if "text/event-stream" not in request.META.get("HTTP_ACCEPT", ""):
        return _error(
            None, INVALID_REQUEST, "GET opens an event stream: accept text/event-stream.", 406
        )
    session = await _session_of(request, grant)
    if isinstance(session, HttpResponse):
        return session
    queue = sessions.local.open_stream(session.id)
    return EventStream(_Notifications(session.id, queue))


class _Notifications:
    """A notification stream (a session's GET, or a stateless-era subscription): list
    changes, with a comment now and then to keep it open."""

    def __init__(
        self,
        session_id: str,
        queue: sessions.Queue,
        first: dict[str, Any] | None = None,
        shape: Callable[[dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        self.session_id = session_id
        self.queue = queue
        self.first = first
        self.shape = shape

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._events()

    async def _events(self) -> AsyncIterator[bytes]:
        yield _event(self.first) if self.first is not None else b": stream open\n\n"
        while True:
            try:
                message = await asyncio.wait_for(self.queue.get(), _KEEPALIVE_SECONDS)
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if message is None:
                return
            shaped = self.shape(message) if self.shape is not None else message
            if shaped is not None:
                yield _event(shaped)

    def close(self) -> None:
        sessions.local.close_stream(self.session_id, self.queue)


def _wants_progress(params: dict[str, Any]) -> bool:
    meta = params.get("_meta")
    return isinstance(meta, dict) and "progressToken" in meta


async def _answer(
    caller: Caller,
    msg_id: Any,
    method: str,
    params: dict[str, Any],
    streamed: bool,
    session_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponseBase:
    async def work(exchange: Exchange | None) -> dict[str, Any]:
        notify = exchange.notify if exchange is not None else None
        try:
            result = await dispatch(caller, method, params, notify)
        except Reply as reply:
            return {"jsonrpc": "2.0", "id": msg_id, "error": reply.error()}
        if caller.modern:
            result = _modern_result(method, result)
        return {"jsonrpc": "2.0", "id": msg_id, "result": result}

    if streamed:
        exchange = Exchange(work)
        exchange.start()
        if session_id is not None and exchange.task is not None:
            _track(session_id, msg_id, exchange.task)
        return EventStream(exchange, headers)
    task = asyncio.get_running_loop().create_task(work(None))
    if session_id is not None:
        _track(session_id, msg_id, task)
    try:
        message = await asyncio.shield(task)
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            task.cancel()  # the client left (stateless era: that is the cancel)
            raise
        message = {
            "jsonrpc": "2.0",
            "id": msg_id,
            "error": {"code": CANCELLED, "message": "Request cancelled."},
        }
    status = 200  # the session era carries JSON-RPC errors in 200 responses
    if "error" in message and caller.modern:
        status = ERROR_CODE_HTTP_STATUS.get(message["error"]["code"], 200)
    return _json(message, status, headers)


def _track(session_id: str, msg_id: Any, task: asyncio.Task[Any]) -> None:
    key = (session_id, msg_id)
    sessions.local.in_flight[key] = task
    task.add_done_callback(lambda _: sessions.local.in_flight.pop(key, None))


# --- stateless era -------------------------------------------------------------------


async def _modern(request: HttpRequest, grant: Any) -> HttpResponseBase:
    if request.method != "POST":
        return _empty(405, {"Allow": "POST"})
    accepts_json, accepts_sse = _accepts(request)
    if not accepts_json:
        return _error(
            None, INVALID_REQUEST, "Accept application/json (and text/event-stream).", 406
        )
    body = _parse(request)
    if isinstance(body, HttpResponse):
        return body
    if "id" not in body or not isinstance(body.get("method"), str):
        return _empty(202)  # notifications have no meaning on this transport
    msg_id, method = body["id"], body["method"]
    headers = {name.lower(): value for name, value in request.headers.items()}
    duplicated = find_duplicated_routing_header(_raw_headers(request))
    verdict = (
        InboundLadderRejection(code=-32020, message=f"{duplicated} header appears more than once")
        if duplicated
        else classify_inbound_request(body, headers=headers)
    )
    if isinstance(verdict, InboundLadderRejection):
        return _error(msg_id, verdict.code, verdict.message, 400, verdict.data)
    caller = await _caller(request, grant, verdict.protocol_version, modern=True)
    params = body.get("params") or {}
    if method == "server/discover":
        return _json({"jsonrpc": "2.0", "id": msg_id, "result": _discover()})
    if method == "tools/call":
        rejection = await _param_headers(caller, params, headers)
        if rejection is not None:
            return _error(msg_id, rejection.code, rejection.message, 400, rejection.data)
    if method == "ping":
        return _error(msg_id, METHOD_NOT_FOUND, "Method not found: ping", 404)
    if method == "subscriptions/listen":
        if not accepts_sse:
            return _error(
                msg_id,
                INVALID_REQUEST,
                "subscriptions/listen answers with a stream: accept text/event-stream.",
                406,
            )
        return _subscribe(msg_id, params)
    request.cancel_on_disconnect = True  # type: ignore[attr-defined]
    return await _answer(caller, msg_id, method, params, accepts_sse and _wants_progress(params))


_FILTERS = {
    "toolsListChanged": "notifications/tools/list_changed",
    "promptsListChanged": "notifications/prompts/list_changed",
    "resourcesListChanged": "notifications/resources/list_changed",
}


def _subscribe(msg_id: Any, params: dict[str, Any]) -> HttpResponseBase:
    """The stateless era's notification stream: the list changes the client asked for
    (resource subscriptions are not offered, so not acknowledged)."""
    wanted = params.get("notifications")
    wanted = wanted if isinstance(wanted, dict) else {}
    agreed = {name: True for name in _FILTERS if wanted.get(name) is True}
    stream_id = f"listen:{sessions.new_id()}"
    queue = sessions.local.open_stream(stream_id)
    tag = {SUBSCRIPTION_ID_META_KEY: msg_id}
    first = {
        "jsonrpc": "2.0",
        "method": "notifications/subscriptions/acknowledged",
        "params": {"notifications": agreed, "_meta": tag},
    }
    methods = {_FILTERS[name] for name in agreed}

    def shape(message: dict[str, Any]) -> dict[str, Any] | None:
        if message.get("method") not in methods:
            return None
        return {**message, "params": {**(message.get("params") or {}), "_meta": tag}}

    return EventStream(_Notifications(stream_id, queue, first, shape))


def _raw_headers(request: HttpRequest) -> list[tuple[str, str]]:
    scope = getattr(request, "scope", None) or {}
    return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in scope.get("headers", [])]


async def _param_headers(
    caller: Caller, params: dict[str, Any], headers: dict[str, str]
) -> InboundLadderRejection | None:
    """Mcp-Param-* headers must agree with the arguments they mirror (x-mcp-header)."""
    name = params.get("name")
    if not isinstance(name, str):
        return None
    schema = await _input_schema(caller, name)
    if schema is None:
        return None
    arguments = params.get("arguments")
    return validate_mcp_param_headers(
        schema, arguments if isinstance(arguments, dict) else {}, headers
    )


async def _input_schema(caller: Caller, name: str) -> Any:
    split = catalog.split_name(name)
    server = await registry.server_by_prefix(split[0]) if split else None
    if server is None or split is None:
        return None
    listed = catalog.lists.get((server.pk, caller.user_id, "tools/list"))
    for tool in listed or ():
        if tool.get("name") == split[1]:
            return tool.get("inputSchema")
    return None


def _modern_result(method: str, result: dict[str, Any]) -> dict[str, Any]:
    result = {**result}
    result.setdefault("resultType", "complete")
    if method in _CACHEABLE:
        # Lists are filtered per caller: never cacheable by others.
        result["ttlMs"] = 0
        result["cacheScope"] = "private"
    return result


def _discover() -> dict[str, Any]:
    return {
        "supportedVersions": [*MODERN_PROTOCOL_VERSIONS, *reversed(HANDSHAKE_PROTOCOL_VERSIONS)],
        "capabilities": CAPABILITIES,
        "serverInfo": SERVER_INFO,
        "instructions": INSTRUCTIONS,
        "resultType": "complete",
        "ttlMs": 0,
        "cacheScope": "private",
    }
