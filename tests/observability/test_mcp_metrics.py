"""MCP tool calls through the gateway's /mcp, counted by server, method and outcome, and the
upstream circuit breakers' state."""

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from mcp import MCPError

from tests.conftest import LiveServer, free_port
from tests.factories import McpServerFactory, make_key
from tests.mcp.test_gateway import connect, developer
from tests.mcp.upstreams import FixtureUpstream
from tests.observability.conftest import scrape, value

pytestmark = pytest.mark.usefixtures("metrics_token")

CALLS = "thinkwatch_mcp_requests_total"


@pytest.fixture
def mcp(
    gateway: LiveServer, settings: Any, bob: User, fixture_upstream: FixtureUpstream
) -> Iterator[tuple[str, str]]:
    """The gateway's /mcp and Bob's key, with the fixture server registered as 'fixture'."""
    settings.MCP_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    developer(bob)
    McpServerFactory(name="fixture", prefix="fx", url=fixture_upstream.tools, timeout_seconds=5)
    _, key = make_key(bob, surfaces=["mcp_gateway"])
    yield f"{gateway.url}/mcp", key


def call_tools(url: str, key: str, *names: str) -> None:
    async def scenario() -> None:
        async with connect(url, key) as client:
            for name in names:
                with contextlib.suppress(MCPError):  # refusals and failures count too
                    await client.call_tool(name, {"message": "hi"})

    asyncio.run(scenario())


def test_it_counts_tool_calls_by_server_and_outcome(
    gateway: LiveServer, mcp: tuple[str, str]
) -> None:
    before = scrape(gateway.url)

    call_tools(*mcp, "fx__echo", "fx__echo", "fx__fail")

    after = scrape(gateway.url)
    ok = {"server": "fixture", "method": "tools/call", "status": "ok"}
    failed = {"server": "fixture", "method": "tools/call", "status": "tool_error"}
    assert value(after, CALLS, **ok) - value(before, CALLS, **ok) == 2
    assert value(after, CALLS, **failed) - value(before, CALLS, **failed) == 1
    duration = "thinkwatch_mcp_request_duration_seconds_count"
    assert value(after, duration, server="fixture") - value(before, duration, server="fixture") == 3


def test_a_tool_of_no_server_counts_without_its_name(
    gateway: LiveServer, mcp: tuple[str, str]
) -> None:
    before = scrape(gateway.url)

    call_tools(*mcp, "nowhere__made_up_tool")

    after = scrape(gateway.url)
    labels = {"server": "none", "method": "tools/call", "status": "invalid"}
    assert value(after, CALLS, **labels) - value(before, CALLS, **labels) == 1
    assert not any("made_up_tool" in str(key) for key in after)


def test_it_shows_an_open_circuit_breaker(
    gateway: LiveServer, mcp: tuple[str, str], settings: Any
) -> None:
    settings.MCP_BREAKER_FAILURES = 2
    McpServerFactory(name="down", prefix="down", url=f"http://127.0.0.1:{free_port()}/mcp")

    call_tools(*mcp, "fx__echo", "down__anything", "down__anything")

    after = scrape(gateway.url)
    state = "thinkwatch_circuit_breaker_state"
    assert after[(state, frozenset({("surface", "mcp_gateway"), ("target", "down")}))] == 2
    assert after[(state, frozenset({("surface", "mcp_gateway"), ("target", "fixture")}))] == 0
