"""The MCP tests' upstreams answer the official SDK client as the gateway tests assume,
in each protocol era they serve (legacy = the initialize handshake, 2025-11-25)."""

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import httpx
import httpx2
import mcp.types as types
import pytest
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from tests.mcp.upstreams import FixtureUpstream, eventually

MODERN = "2026-07-28"
ERAS = ["legacy", MODERN]


@asynccontextmanager
async def connect(url: str, mode: str, headers: dict[str, str]) -> AsyncIterator[Client]:
    """A client that sends `headers` on every HTTP request."""
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=300)) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def texts(result: types.CallToolResult) -> list[str]:
    return [block.text for block in result.content if isinstance(block, types.TextContent)]


def contents(result: types.ReadResourceResult) -> list[str]:
    return [each.text for each in result.contents if isinstance(each, types.TextResourceContents)]


async def all_tool_pages(client: Client) -> list[list[str]]:
    pages = [await client.list_tools()]
    while pages[-1].next_cursor:
        pages.append(await client.list_tools(cursor=pages[-1].next_cursor))
    return [[tool.name for tool in page.tools] for page in pages]


# server-everything


async def test_it_lists_the_everything_tools(everything_url: str) -> None:
    async with Client(everything_url, mode="legacy") as client:
        names = {tool.name for tool in (await client.list_tools()).tools}

    assert {"echo", "get-sum", "trigger-long-running-operation"} <= names


async def test_it_echoes_through_everything(everything_url: str) -> None:
    async with Client(everything_url, mode="legacy") as client:
        result = await client.call_tool("echo", {"message": "hello"})

    assert texts(result) == ["Echo: hello"]


async def test_it_finds_everything_speaks_only_the_legacy_era(everything_url: str) -> None:
    async with Client(everything_url, mode="auto") as client:
        assert client.protocol_version == "2025-11-25"


async def test_it_receives_the_everything_progress_notifications(everything_url: str) -> None:
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with Client(everything_url, mode="legacy") as client:
        arguments = {"duration": 0.3, "steps": 3}
        await client.call_tool(
            "trigger-long-running-operation", arguments, progress_callback=on_progress
        )

    assert seen == [(1, 3), (2, 3), (3, 3)]


# mcp-server-time behind supergateway


@pytest.mark.parametrize("mode", ERAS)
async def test_it_tells_the_time_through_the_bridge(time_url: str, mode: str) -> None:
    async with Client(time_url, mode=mode) as client:
        names = {tool.name for tool in (await client.list_tools()).tools}
        result = await client.call_tool("get_current_time", {"timezone": "UTC"})

    assert names == {"get_current_time", "convert_time"}
    assert result.structured_content is not None
    told = datetime.fromisoformat(result.structured_content["datetime"])
    assert abs((datetime.now(UTC) - told).total_seconds()) < 30


# the fixture server: /tools


@pytest.mark.parametrize("mode", ERAS)
async def test_it_lists_the_fixture_tools(fixture_base: FixtureUpstream, mode: str) -> None:
    async with Client(fixture_base.tools, mode=mode) as client:
        names = [tool.name for tool in (await client.list_tools()).tools]

    assert names == ["echo", "slow", "fail", "crash", "progress", "structured", "whoami"]


@pytest.mark.parametrize("mode", ERAS)
async def test_it_echoes_the_message_verbatim(fixture_upstream: FixtureUpstream, mode: str) -> None:
    async with Client(fixture_upstream.tools, mode=mode) as client:
        result = await client.call_tool("echo", {"message": "hello"})

    assert texts(result) == ["hello"]
    assert fixture_upstream.calls("tools", "echo") == 1


@pytest.mark.parametrize(("mode", "version"), [("legacy", "2025-11-25"), (MODERN, MODERN)])
async def test_it_shows_the_headers_the_tool_was_called_with(
    fixture_base: FixtureUpstream, mode: str, version: str
) -> None:
    headers = {"Authorization": "Bearer upstream-token", "X-Api-Key": "key-1", "X-Tenant": "acme"}
    async with connect(fixture_base.tools, mode, headers) as client:
        result = await client.call_tool("whoami", {})

    assert result.structured_content is not None
    assert result.structured_content["authorization"] == "Bearer upstream-token"
    seen = result.structured_content["headers"]
    assert (seen["x-api-key"], seen["x-tenant"]) == ("key-1", "acme")
    assert result.structured_content["protocol_version"] == version


@pytest.mark.parametrize("mode", ERAS)
async def test_it_sends_progress_for_the_progress_token(
    fixture_base: FixtureUpstream, mode: str
) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(fixture_base.tools, mode=mode) as client:
        result = await client.call_tool("progress", {"steps": 3}, progress_callback=on_progress)

    assert seen == [(1, 3, "step 1 of 3"), (2, 3, "step 2 of 3"), (3, 3, "step 3 of 3")]
    assert texts(result) == ["done in 3 steps"]


@pytest.mark.parametrize("mode", ERAS)
async def test_it_returns_structured_content_matching_its_output_schema(
    fixture_base: FixtureUpstream, mode: str
) -> None:
    async with Client(fixture_base.tools, mode=mode) as client:
        # Listed first, so the SDK validates the result against the advertised outputSchema.
        tools = {tool.name: tool for tool in (await client.list_tools()).tools}
        result = await client.call_tool("structured", {"city": "Porto"})

    tool = tools["structured"]
    assert (tool.title, tool.output_schema is not None) == ("Weather report", True)
    assert tool.annotations == types.ToolAnnotations(
        title="Weather report", read_only_hint=True, open_world_hint=False
    )
    assert result.structured_content == {"city": "Porto", "temperature_c": 21.5, "sunny": True}


@pytest.mark.parametrize("mode", ERAS)
async def test_it_answers_a_failing_tool_with_is_error(
    fixture_base: FixtureUpstream, mode: str
) -> None:
    async with Client(fixture_base.tools, mode=mode) as client:
        result = await client.call_tool("fail", {})

    assert (result.is_error, texts(result)) == (True, ["the fixture tool failed on purpose"])


@pytest.mark.parametrize(
    ("mode", "code", "message"),
    [
        ("legacy", 0, "the fixture tool crashed on purpose"),
        (MODERN, types.INTERNAL_ERROR, "Internal server error"),
    ],
)
async def test_it_answers_a_crashing_tool_with_a_json_rpc_error(
    fixture_base: FixtureUpstream, mode: str, code: int, message: str
) -> None:
    async with Client(fixture_base.tools, mode=mode) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("crash", {})

    assert (raised.value.code, raised.value.message) == (code, message)


@pytest.mark.parametrize("mode", ERAS)
async def test_it_refuses_an_unknown_tool(fixture_base: FixtureUpstream, mode: str) -> None:
    async with Client(fixture_base.tools, mode=mode) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("nope", {})

    assert raised.value.code == types.INVALID_PARAMS


@pytest.mark.parametrize("mode", ERAS)
async def test_it_stops_a_slow_tool_the_client_gave_up_on(
    fixture_upstream: FixtureUpstream, mode: str
) -> None:
    started = time.monotonic()
    async with Client(fixture_upstream.tools, mode=mode) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("slow", {"seconds": 10}, read_timeout_seconds=0.3)

    assert raised.value.code == types.REQUEST_TIMEOUT
    assert time.monotonic() - started < 5
    assert eventually(lambda: fixture_upstream.cancelled("tools", "slow"), 1) == 1


@pytest.mark.parametrize("mode", ERAS)
async def test_it_answers_a_slow_tool_given_time(fixture_base: FixtureUpstream, mode: str) -> None:
    async with Client(fixture_base.tools, mode=mode) as client:
        result = await client.call_tool("slow", {"seconds": 0.2})

    assert texts(result) == ["slept 0.2 s"]


@pytest.mark.parametrize("mode", ERAS)
async def test_it_serves_a_resource_a_template_and_a_prompt(
    fixture_base: FixtureUpstream, mode: str
) -> None:
    async with Client(fixture_base.tools, mode=mode) as client:
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
        greeting = await client.read_resource("fixture://greeting")
        for_bob = await client.read_resource("fixture://greeting/Bob")
        prompt = await client.get_prompt("greet", {"name": "Bob"})

    assert [resource.uri for resource in resources] == ["fixture://greeting"]
    assert [template.uri_template for template in templates] == ["fixture://greeting/{name}"]
    assert contents(greeting) == ["Hello from the fixture server."]
    assert contents(for_bob) == ["Hello, Bob!"]
    assert prompt.messages[0].content == types.TextContent(text="Say hello to Bob.")


@pytest.mark.parametrize(("mode", "handshake"), [("legacy", {"initialize": 1}), (MODERN, {})])
async def test_it_counts_each_method_and_tool_call(
    fixture_upstream: FixtureUpstream, mode: str, handshake: dict[str, int]
) -> None:
    async with Client(fixture_upstream.tools, mode=mode) as client:
        # Listed first: the SDK client lists a tool it has not seen before checking its result.
        await client.list_tools()
        await client.call_tool("echo", {"message": "one"})
        await client.call_tool("echo", {"message": "two"})

    assert fixture_upstream.stats()["tools"] == {
        "methods": {**handshake, "tools/list": 1, "tools/call": 2},
        "calls": {"echo": 2},
        "cancelled": {},
    }


# the fixture server: /paged


@pytest.mark.parametrize("mode", ERAS)
async def test_it_pages_the_tools_ten_at_a_time(fixture_base: FixtureUpstream, mode: str) -> None:
    async with Client(fixture_base.paged, mode=mode) as client:
        pages = await all_tool_pages(client)

    assert [len(page) for page in pages] == [10, 10, 5]
    assert [name for page in pages for name in page] == [f"tool_{n:02}" for n in range(25)]


@pytest.mark.parametrize("mode", ERAS)
async def test_it_refuses_a_garbage_cursor(fixture_base: FixtureUpstream, mode: str) -> None:
    async with Client(fixture_base.paged, mode=mode) as client:
        with pytest.raises(MCPError) as raised:
            await client.list_tools(cursor="garbage")

    assert raised.value.code == types.INVALID_PARAMS


@pytest.mark.parametrize("mode", ERAS)
async def test_it_pages_the_resources_and_prompts(fixture_base: FixtureUpstream, mode: str) -> None:
    async with Client(fixture_base.paged, mode=mode) as client:
        resources = await client.list_resources()
        more_resources = await client.list_resources(cursor=resources.next_cursor)
        prompts = await client.list_prompts()
        more_prompts = await client.list_prompts(cursor=prompts.next_cursor)
        item = await client.read_resource(more_resources.resources[-1].uri)

    assert [len(resources.resources), len(more_resources.resources)] == [10, 5]
    assert [len(prompts.prompts), len(more_prompts.prompts)] == [10, 5]
    assert (more_resources.next_cursor, more_prompts.next_cursor) == (None, None)
    assert contents(item) == ["item 14"]


# the fixture server: /modern


@pytest.mark.parametrize("mode", [MODERN, "auto"])
async def test_it_adds_in_the_modern_era(fixture_base: FixtureUpstream, mode: str) -> None:
    async with Client(fixture_base.modern, mode=mode) as client:
        result = await client.call_tool("add", {"a": 2, "b": 3})
        version = client.protocol_version

    assert version == MODERN
    assert (texts(result), result.structured_content) == (["5"], {"sum": 5})


async def test_it_refuses_the_legacy_handshake_on_the_modern_server(
    fixture_base: FixtureUpstream,
) -> None:
    unsupported = pytest.RaisesExc(
        MCPError,
        check=lambda error: (
            error.code == types.UNSUPPORTED_PROTOCOL_VERSION and error.data["supported"] == [MODERN]
        ),
    )
    with pytest.RaisesGroup(unsupported, flatten_subgroups=True):
        async with Client(fixture_base.modern, mode="legacy"):
            pass


def test_it_refuses_a_get_stream_on_the_modern_server(fixture_base: FixtureUpstream) -> None:
    response = httpx.get(fixture_base.modern, headers={"Accept": "text/event-stream"})

    assert response.status_code == 405
