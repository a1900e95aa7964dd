"""Connections to upstream MCP servers, through the official SDK's client.

One connection per (server, user, credential): users never share an upstream session, so
no state (subscriptions, log levels, a server's per-session memory) leaks between them,
and a changed credential opens a fresh connection. A connection lives in a task of its
own (the SDK's client is an async context manager that must be entered and left by one
task) and serves any number of concurrent requests. The SDK negotiates the era: it probes
`server/discover` and falls back to `initialize` for servers of the session-based era.

Requests go out through `ClientSession.send_request` and come back as the server's raw
JSON result, so tool schemas, annotations and results reach clients unchanged (the SDK's
typed results drop fields it does not know).

Each server has a circuit breaker: after `MCP_BREAKER_FAILURES` consecutive failures
(unreachable, timing out, answering with errors of the transport) calls fail fast for
`MCP_BREAKER_OPEN_SECONDS`, then one trial call decides.
"""

import asyncio
import hashlib
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
import mcp.types as types
from django.conf import settings
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.jsonrpc import CONNECTION_CLOSED, INTERNAL_ERROR, INVALID_REQUEST, REQUEST_TIMEOUT
from pydantic import TypeAdapter

from mcpgw import ssrf

ProgressFn = Callable[[float, float | None, str | None], Awaitable[None]]
Listener = Callable[[int, str], None]

_RAW = TypeAdapter(dict[str, Any])
# Told when a server says one of its lists changed: (server id, "tools" | "resources" | ...).
listeners: list[Listener] = []
_IDLE_SECONDS = 300.0
_CLIENT_INFO = types.Implementation(name="thinkwatch-mcp-gateway", version="1.0")

# What a request method needs from the SDK: its typed request, built from raw params.
_REQUESTS: dict[str, Any] = {
    "tools/list": types.ListToolsRequest,
    "tools/call": types.CallToolRequest,
    "resources/list": types.ListResourcesRequest,
    "resources/templates/list": types.ListResourceTemplatesRequest,
    "resources/read": types.ReadResourceRequest,
    "prompts/list": types.ListPromptsRequest,
    "prompts/get": types.GetPromptRequest,
}


class UpstreamFailure(Exception):
    """The server could not be reached or did not answer (as opposed to answering with an
    error of its own). `timeout` tells the two apart for the audit record."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class UpstreamError(Exception):
    """The server answered the request with a JSON-RPC error; relayed as it is."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


@dataclass
class Breaker:
    failures: int = 0
    opened_at: float | None = None
    trial: bool = False

    def check(self, name: str) -> None:
        if self.opened_at is None:
            return
        if time.monotonic() - self.opened_at < settings.MCP_BREAKER_OPEN_SECONDS or self.trial:
            raise UpstreamFailure(
                f"The MCP server '{name}' is failing; calls to it are paused for a while "
                "(circuit open)."
            )
        self.trial = True  # half open: this call decides

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.trial = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        self.trial = False
        if self.failures >= settings.MCP_BREAKER_FAILURES:
            self.opened_at = time.monotonic()

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if self.trial else "open"


@dataclass(frozen=True)
class Target:
    """Where and as whom to connect."""

    server_id: int
    name: str
    url: str
    headers: tuple[tuple[str, str], ...]
    timeout: float
    user_id: int | None

    @property
    def key(self) -> tuple[int, int | None, str]:
        digest = hashlib.sha256(repr((self.url, self.headers)).encode()).hexdigest()
        return (self.server_id, self.user_id, digest)


@dataclass
class Connection:
    target: Target
    on_list_changed: Listener
    client: Client | None = None
    error: BaseException | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    last_used: float = field(default_factory=time.monotonic)

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        target = self.target
        try:
            async with (
                httpx2.AsyncClient(
                    headers=dict(target.headers),
                    timeout=httpx2.Timeout(
                        target.timeout, connect=settings.UPSTREAM_CONNECT_TIMEOUT
                    ),
                    follow_redirects=False,
                ) as http,
                Client(
                    streamable_http_client(target.url, http_client=http),
                    mode="auto",
                    cache=None,
                    client_info=_CLIENT_INFO,
                    read_timeout_seconds=target.timeout,
                    message_handler=self._on_message,
                ) as client,
            ):
                self.client = client
                self.ready.set()
                await self.closing.wait()
        except BaseException as exc:  # whatever ends it, the waiters must learn it
            self.error = exc
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.client = None
            self.closing.set()
            self.ready.set()

    async def _on_message(self, message: Any) -> None:
        method = getattr(message, "method", None)
        if isinstance(method, str) and method.endswith("/list_changed"):
            self.on_list_changed(self.target.server_id, method.split("/")[0])

    async def connected(self) -> Client:
        with_timeout = self.target.timeout + settings.UPSTREAM_CONNECT_TIMEOUT
        try:
            await asyncio.wait_for(self.ready.wait(), with_timeout)
        except TimeoutError:
            self.close()
            raise UpstreamFailure(
                f"The MCP server '{self.target.name}' did not complete its handshake in time.",
                timeout=True,
            ) from None
        if self.client is None:
            raise UpstreamFailure(
                f"Could not connect to the MCP server '{self.target.name}': "
                f"{_describe(self.error)}."
            )
        return self.client

    def close(self) -> None:
        self.closing.set()

    @property
    def alive(self) -> bool:
        return not self.closing.is_set()


def _describe(exc: BaseException | None) -> str:
    """A failure in words, without URLs' credentials or headers (never the exception's
    repr: httpx errors can carry the request)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    if exc is None:
        return "the connection closed"
    if isinstance(exc, MCPError):
        return exc.error.message
    if isinstance(exc, httpx2.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    if isinstance(exc, httpx2.TimeoutException):
        return "timed out"
    if isinstance(exc, httpx2.ConnectError | OSError):
        return "connection refused or unreachable"
    return type(exc).__name__


class Pool:
    """Every open upstream connection of this process, and the breakers."""

    def __init__(self) -> None:
        self._connections: dict[tuple[int, int | None, str], Connection] = {}
        self._breakers: dict[int, Breaker] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def breaker(self, server_id: int) -> Breaker:
        return self._breakers.setdefault(server_id, Breaker())

    def breakers(self) -> dict[int, Breaker]:
        """Each server's breaker by server id (a copy: the metrics read it from a thread)."""
        return dict(self._breakers)

    def _list_changed(self, server_id: int, kind: str) -> None:
        for listener in listeners:
            listener(server_id, kind)

    async def request(
        self,
        target: Target,
        method: str,
        params: dict[str, Any] | None,
        progress: ProgressFn | None = None,
    ) -> dict[str, Any]:
        """Send one request and return the raw result, or raise UpstreamError (the server
        said no) or UpstreamFailure (it could not be asked)."""
        breaker = self.breaker(target.server_id)
        breaker.check(target.name)
        try:
            result = await self._request(target, method, params, progress)
        except UpstreamFailure:
            breaker.failed()
            raise
        except UpstreamError:
            breaker.succeeded()  # it answered
            raise
        except asyncio.CancelledError:
            breaker.trial = False
            raise
        breaker.succeeded()
        return result

    async def _request(
        self,
        target: Target,
        method: str,
        params: dict[str, Any] | None,
        progress: ProgressFn | None,
    ) -> dict[str, Any]:
        request = _REQUESTS[method].model_validate({"method": method, "params": params})
        for attempt in (1, 2):
            connection = await self._connection(target)
            client = await connection.connected()
            try:
                return await client.session.send_request(  # type: ignore[type-var]
                    request,
                    _RAW,
                    request_read_timeout_seconds=target.timeout,
                    progress_callback=progress,  # type: ignore[arg-type]
                )
            except MCPError as exc:
                code = exc.error.code
                if code == INVALID_REQUEST and exc.error.message == "Session terminated":
                    # The server forgot the session (restarted, expired): the request
                    # never ran, so it is safe to send again on a new one.
                    connection.close()
                    if attempt == 1:
                        continue
                if code == REQUEST_TIMEOUT:
                    raise UpstreamFailure(
                        f"The MCP server '{target.name}' did not answer within "
                        f"{target.timeout:g} s.",
                        timeout=True,
                    ) from None
                if code == CONNECTION_CLOSED or (
                    code == INTERNAL_ERROR and exc.error.message.startswith("Server returned")
                ):
                    connection.close()
                    raise UpstreamFailure(
                        f"The MCP server '{target.name}' failed: {exc.error.message}."
                    ) from None
                raise UpstreamError(code, exc.error.message, exc.error.data) from None
            except (httpx2.HTTPError, OSError, *_CLOSED) as exc:
                connection.close()
                raise UpstreamFailure(
                    f"The MCP server '{target.name}' failed: {_describe(exc)}."
                ) from None
        raise AssertionError("unreachable")

    async def _connection(self, target: Target) -> Connection:
        await self._check_address(target)
        connection = self._connections.get(target.key)
        if connection is None or not connection.alive:
            connection = Connection(target, self._list_changed)
            connection.start()
            self._connections[target.key] = connection
            self._start_sweeper()
        connection.last_used = time.monotonic()
        return connection

    async def _check_address(self, target: Target) -> None:
        try:
            await ssrf.acheck_url(target.url)
        except ssrf.Refused as exc:
            raise UpstreamFailure(
                f"The MCP server '{target.name}' is not reachable: {exc}"
            ) from None

    def _start_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while self._connections:
            await asyncio.sleep(min(_IDLE_SECONDS / 4, 30.0))
            now = time.monotonic()
            for key, connection in list(self._connections.items()):
                if not connection.alive or now - connection.last_used > _IDLE_SECONDS:
                    connection.close()
                    del self._connections[key]

    async def close(self) -> None:
        tasks = [c.task for c in self._connections.values() if c.task is not None]
        for connection in self._connections.values():
            connection.close()
        self._connections.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)


_CLOSED = (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream)
_pools: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Pool]" = weakref.WeakKeyDictionary()


def pool() -> Pool:
    """The running event loop's pool (connections belong to the loop that opened them)."""
    loop = asyncio.get_running_loop()
    found = _pools.get(loop)
    if found is None:
        found = _pools[loop] = Pool()
    return found


def pools() -> list[Pool]:
    return list(_pools.values())
