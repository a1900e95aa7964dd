"""The project's own MCP servers for the gateway tests, built with the official `mcp` SDK
and served by one uvicorn process on a loopback port:

    python -m tests.mcp.fixture_server --port 8931

- `/paged/mcp`: 25 tools, 15 resources and 15 prompts, listed in pages of 10.
- `/tools/mcp`: tools that echo, sleep, fail, crash, report progress, return structured
  output and show the headers they were called with; a resource, a resource template and
  a prompt. Both protocol eras.
- `/modern/mcp`: `add` and `whoami`, in the stateless 2026-07-28 era only.
- `GET /stats`: what each server was asked (requests by method, tool calls started and
  cancelled); `DELETE /stats` forgets it. A test reads it to prove a call never arrived.
"""

import argparse
import base64
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import mcp.types as types
import uvicorn
from mcp.server import Server, ServerRequestContext
from mcp.server.context import CallNext, HandlerResult, ServerMiddleware
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

PAGE_SIZE = 10

Context = ServerRequestContext[Any, Any]
ToolFn = Callable[[Context, dict[str, Any]], Awaitable[types.CallToolResult]]
T = TypeVar("T")


@dataclass
class Stats:
    """What one server was asked since the last reset."""

    methods: Counter[str] = field(default_factory=Counter)  # requests, e.g. "tools/list"
    calls: Counter[str] = field(default_factory=Counter)  # tool name -> calls started
    cancelled: Counter[str] = field(default_factory=Counter)  # tool name -> calls cancelled

    def reset(self) -> None:
        for counter in (self.methods, self.calls, self.cancelled):
            counter.clear()


@dataclass(frozen=True)
class FixtureTool:
    tool: types.Tool
    run: ToolFn


def text(value: str) -> list[types.ContentBlock]:
    return [types.TextContent(text=value)]


def schema(properties: dict[str, Any] | None = None, *required: str) -> dict[str, Any]:
    return {"type": "object", "properties": properties or {}, "required": list(required)}


def cursor_at(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset={offset}".encode()).decode()


def offset_of(cursor: str, size: int) -> int:
    """The offset an opaque cursor of ours stands for; anything else is refused."""
    try:
        name, _, value = base64.urlsafe_b64decode(cursor.encode()).decode().partition("=")
        offset = int(value) if name == "offset" else -1
    except ValueError:
        offset = -1
    if not 0 < offset < size:
        raise MCPError(types.INVALID_PARAMS, f"Invalid cursor: {cursor!r}")
    return offset


def page(
    items: Sequence[T], params: types.PaginatedRequestParams | None
) -> tuple[list[T], str | None]:
    cursor = params.cursor if params else None
    start = 0 if cursor is None else offset_of(cursor, len(items))
    end = start + PAGE_SIZE
    return list(items[start:end]), cursor_at(end) if end < len(items) else None


# What the tools do; the servers below pick theirs from these.


async def echo(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=text(str(args.get("message", ""))))


async def slow(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    seconds = float(args.get("seconds", 5))
    await anyio.sleep(seconds)
    return types.CallToolResult(content=text(f"slept {seconds:g} s"))


async def fail(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(content=text("the fixture tool failed on purpose"), is_error=True)


async def crash(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    raise RuntimeError("the fixture tool crashed on purpose")


async def progress(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    steps = int(args.get("steps", 3))
    for step in range(1, steps + 1):
        await ctx.session.report_progress(step, steps, f"step {step} of {steps}")
        await anyio.sleep(float(args.get("interval", 0.02)))
    return types.CallToolResult(content=text(f"done in {steps} steps"))


async def structured(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    weather = {"city": str(args.get("city", "Lisbon")), "temperature_c": 21.5, "sunny": True}
    return types.CallToolResult(content=text(json.dumps(weather)), structured_content=weather)


async def whoami(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    request = ctx.request
    assert isinstance(request, Request)  # the HTTP transports hand over Starlette's request
    seen = {
        "authorization": request.headers.get("authorization"),
        "headers": dict(request.headers),
        "protocol_version": ctx.protocol_version,
    }
    return types.CallToolResult(content=text(json.dumps(seen)), structured_content=seen)


async def add(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
    total = args["a"] + args["b"]
    return types.CallToolResult(content=text(str(total)), structured_content={"sum": total})


WEATHER = schema(
    {
        "city": {"type": "string"},
        "temperature_c": {"type": "number"},
        "sunny": {"type": "boolean"},
    },
    "city",
    "temperature_c",
    "sunny",
)

WHOAMI = FixtureTool(
    types.Tool(
        name="whoami",
        description="Shows the Authorization and other headers of the HTTP request.",
        input_schema=schema(),
    ),
    whoami,
)

FIXTURE_TOOLS = [
    FixtureTool(
        types.Tool(
            name="echo",
            description="Answers with the message it was given, verbatim.",
            input_schema=schema({"message": {"type": "string"}}, "message"),
        ),
        echo,
    ),
    FixtureTool(
        types.Tool(
            name="slow",
            description="Sleeps `seconds` (default 5) before answering; cancellable.",
            input_schema=schema({"seconds": {"type": "number"}}),
        ),
        slow,
    ),
    FixtureTool(
        types.Tool(name="fail", description="Answers with isError: true.", input_schema=schema()),
        fail,
    ),
    FixtureTool(
        types.Tool(name="crash", description="Raises: a JSON-RPC error.", input_schema=schema()),
        crash,
    ),
    FixtureTool(
        types.Tool(
            name="progress",
            description="Reports `steps` progress notifications, then answers.",
            input_schema=schema({"steps": {"type": "integer"}, "interval": {"type": "number"}}),
        ),
        progress,
    ),
    FixtureTool(
        types.Tool(
            name="structured",
            title="Weather report",
            description="Structured output matching its outputSchema.",
            input_schema=schema({"city": {"type": "string"}}),
            output_schema=WEATHER,
            annotations=types.ToolAnnotations(
                title="Weather report", read_only_hint=True, open_world_hint=False
            ),
        ),
        structured,
    ),
    WHOAMI,
]

MODERN_TOOLS = [
    FixtureTool(
        types.Tool(
            name="add",
            description="Adds two numbers.",
            input_schema=schema({"a": {"type": "number"}, "b": {"type": "number"}}, "a", "b"),
            output_schema=schema({"sum": {"type": "number"}}, "sum"),
        ),
        add,
    ),
    WHOAMI,
]


def numbered_tool(number: int) -> FixtureTool:
    name = f"tool_{number:02}"

    async def run(ctx: Context, args: dict[str, Any]) -> types.CallToolResult:
        return types.CallToolResult(content=text(f"{name} ran"))

    return FixtureTool(
        types.Tool(name=name, description=f"Paged tool {number}.", input_schema=schema()), run
    )


PAGED_TOOLS = [numbered_tool(number) for number in range(25)]
PAGED_RESOURCES = [
    types.Resource(uri=f"paged://item/{n:02}", name=f"item_{n:02}", mime_type="text/plain")
    for n in range(15)
]
PAGED_PROMPTS = [
    types.Prompt(name=f"prompt_{n:02}", description=f"Paged prompt {n}.") for n in range(15)
]

GREETING = types.Resource(uri="fixture://greeting", name="greeting", mime_type="text/plain")
GREETING_FOR = types.ResourceTemplate(
    uri_template="fixture://greeting/{name}", name="greeting_for", mime_type="text/plain"
)
GREET = types.Prompt(
    name="greet",
    description="Asks the model to greet someone.",
    arguments=[types.PromptArgument(name="name", required=True)],
)


def counting(stats: Stats) -> ServerMiddleware[Any]:
    async def count(ctx: Context, call_next: CallNext) -> HandlerResult:
        if ctx.request_id is not None:
            stats.methods[ctx.method] += 1
        return await call_next(ctx)

    return count


def tool_server(name: str, tools: list[FixtureTool], stats: Stats, **handlers: Any) -> Server[Any]:
    """A low-level SDK server for `tools`, counting what it is asked into `stats`."""
    by_name = {tool.tool.name: tool for tool in tools}

    async def list_tools(
        ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListToolsResult:
        listed, next_cursor = page([tool.tool for tool in tools], params)
        return types.ListToolsResult(tools=listed, next_cursor=next_cursor)

    async def call_tool(ctx: Context, params: types.CallToolRequestParams) -> types.CallToolResult:
        tool = by_name.get(params.name)
        if tool is None:
            raise MCPError(types.INVALID_PARAMS, f"Unknown tool: {params.name}")
        stats.calls[params.name] += 1
        try:
            return await tool.run(ctx, dict(params.arguments or {}))
        except anyio.get_cancelled_exc_class():
            stats.cancelled[params.name] += 1
            raise

    def input_schema(tool_name: str) -> dict[str, Any] | None:
        # Without this the SDK walks our own tools/list on every modern tools/call that has
        # arguments (to check Mcp-Param headers), which would show up in the counts.
        tool = by_name.get(tool_name)
        return tool.tool.input_schema if tool else None

    server: Server[Any] = Server(
        name,
        version="1.0.0",
        get_tool_input_schema=input_schema,
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        **handlers,
    )
    server.middleware.append(counting(stats))
    return server


def resource_text(uri: str, value: str) -> types.ReadResourceResult:
    return types.ReadResourceResult(
        contents=[types.TextResourceContents(uri=uri, mime_type="text/plain", text=value)]
    )


def prompt_text(value: str) -> types.GetPromptResult:
    return types.GetPromptResult(
        messages=[types.PromptMessage(role="user", content=types.TextContent(text=value))]
    )


def not_found(what: str) -> MCPError:
    return MCPError(types.INVALID_PARAMS, f"Not found: {what}")


def paged_server(stats: Stats) -> Server[Any]:
    async def list_resources(
        ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        listed, next_cursor = page(PAGED_RESOURCES, params)
        return types.ListResourcesResult(resources=listed, next_cursor=next_cursor)

    async def read_resource(
        ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        if params.uri not in {resource.uri for resource in PAGED_RESOURCES}:
            raise not_found(params.uri)
        return resource_text(params.uri, f"item {params.uri.rsplit('/', 1)[1]}")

    async def list_prompts(
        ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        listed, next_cursor = page(PAGED_PROMPTS, params)
        return types.ListPromptsResult(prompts=listed, next_cursor=next_cursor)

    async def get_prompt(
        ctx: Context, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        if params.name not in {prompt.name for prompt in PAGED_PROMPTS}:
            raise not_found(params.name)
        return prompt_text(f"This is {params.name}.")

    return tool_server(
        "fixture-paged",
        PAGED_TOOLS,
        stats,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


def tools_server(stats: Stats) -> Server[Any]:
    async def list_resources(
        ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourcesResult:
        return types.ListResourcesResult(resources=[GREETING])

    async def list_templates(
        ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(resource_templates=[GREETING_FOR])

    async def read_resource(
        ctx: Context, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        prefix = "fixture://greeting/"
        if params.uri == GREETING.uri:
            return resource_text(params.uri, "Hello from the fixture server.")
        if params.uri.startswith(prefix) and len(params.uri) > len(prefix):
            return resource_text(params.uri, f"Hello, {params.uri.removeprefix(prefix)}!")
        raise not_found(params.uri)

    async def list_prompts(
        ctx: Context, params: types.PaginatedRequestParams | None
    ) -> types.ListPromptsResult:
        return types.ListPromptsResult(prompts=[GREET])

    async def get_prompt(
        ctx: Context, params: types.GetPromptRequestParams
    ) -> types.GetPromptResult:
        name = (params.arguments or {}).get("name")
        if params.name != GREET.name:
            raise not_found(params.name)
        if not name:
            raise MCPError(types.INVALID_PARAMS, "The greet prompt needs a name argument.")
        return prompt_text(f"Say hello to {name}.")

    return tool_server(
        "fixture-tools",
        FIXTURE_TOOLS,
        stats,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )


class ModernOnly:
    """Refuses the handshake era the way a server that speaks only 2026-07-28 does: a POST
    without a modern MCP-Protocol-Version header (e.g. `initialize`) gets 400 with
    -32022 naming the supported versions; GET and DELETE get 405."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        requested = request.headers.get("mcp-protocol-version")
        if requested in MODERN_PROTOCOL_VERSIONS:
            await self.app(scope, receive, send)
            return
        if request.method != "POST":
            await Response(status_code=405, headers={"Allow": "POST"})(scope, receive, send)
            return
        try:
            body = json.loads(await request.body())
            request_id = body.get("id")
            requested = requested or body.get("params", {}).get("protocolVersion")
        except (ValueError, AttributeError):
            request_id = None
        error = {
            "code": types.UNSUPPORTED_PROTOCOL_VERSION,
            "message": "This server speaks only the 2026-07-28 protocol.",
            "data": {"supported": list(MODERN_PROTOCOL_VERSIONS), "requested": requested},
        }
        answer = {"jsonrpc": "2.0", "id": request_id, "error": error}
        await JSONResponse(answer, status_code=400)(scope, receive, send)


def build_app() -> Starlette:
    stats = {"paged": Stats(), "tools": Stats(), "modern": Stats()}
    servers = {
        "paged": paged_server(stats["paged"]),
        "tools": tools_server(stats["tools"]),
        "modern": tool_server("fixture-modern", MODERN_TOOLS, stats["modern"]),
    }
    apps: dict[str, ASGIApp] = {
        name: server.streamable_http_app(
            streamable_http_path="/mcp", stateless_http=name == "modern"
        )
        for name, server in servers.items()
    }
    apps["modern"] = ModernOnly(apps["modern"])

    async def show_stats(request: Request) -> Response:
        if request.method == "DELETE":
            for each in stats.values():
                each.reset()
            return Response(status_code=204)
        return JSONResponse(
            {
                name: {"methods": each.methods, "calls": each.calls, "cancelled": each.cancelled}
                for name, each in stats.items()
            }
        )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # A mounted app's own lifespan never runs: each session manager is entered here.
        async with AsyncExitStack() as stack:
            for server in servers.values():
                await stack.enter_async_context(server.session_manager.run())
            yield

    routes: list[BaseRoute] = [Route("/stats", show_stats, methods=["GET", "DELETE"])]
    routes += [Mount(f"/{name}", app) for name, app in apps.items()]
    return Starlette(routes=routes, lifespan=lifespan)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    port = parser.parse_args().port
    uvicorn.run(
        build_app(), host="127.0.0.1", port=port, log_level="warning", timeout_graceful_shutdown=2
    )


if __name__ == "__main__":
    main()
