"""MCP arguments and results captured through a real gateway, the official MCP SDK and the
project's fixture server."""

import asyncio
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from django.contrib.auth.models import User

from tests.bodies.conftest import mcp_logged
from tests.conftest import LiveServer
from tests.factories import McpServerFactory, make_key
from tests.mcp.test_gateway import SURFACES, connect, developer
from tests.mcp.upstreams import FixtureUpstream

MESSAGE = "mail dave@example.com, key sk-abcdefghijklmnopqrstuvwx"


@pytest.fixture
def mcp(
    gateway: LiveServer, settings: Any, bob: User, fixture_upstream: FixtureUpstream
) -> Iterator[tuple[str, str]]:
    """The gateway's /mcp endpoint in front of the fixture's tools, and Bob's key."""
    settings.MCP_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    developer(bob)
    McpServerFactory(name="fixture tools", prefix="fx", url=fixture_upstream.tools)
    _, key = make_key(bob, surfaces=SURFACES)
    yield f"{gateway.url}/mcp", key


def echo(mcp: tuple[str, str], arguments: dict[str, Any]) -> None:
    async def scenario() -> None:
        async with connect(*mcp) as client:
            await client.call_tool("fx__echo", arguments)

    asyncio.run(scenario())


def test_it_captures_the_arguments_and_the_result_redacted(
    capturing: None, mcp: tuple[str, str]
) -> None:
    echo(mcp, {"message": MESSAGE, "password": "hunter2"})

    record = mcp_logged()[-1]
    assert record.arguments == {"message": "mail [EMAIL], key [SECRET]", "password": "[SECRET]"}
    result = orjson.loads(record.result)
    assert result["content"][0]["text"] == "mail [EMAIL], key [SECRET]"
    assert record.body_redactions == {"email": 2, "secret": 3}
    assert record.body_truncated is False


def test_it_keeps_only_the_secret_redacted_arguments_when_capture_is_off(
    mcp: tuple[str, str],
) -> None:
    echo(mcp, {"message": MESSAGE, "password": "hunter2"})

    record = mcp_logged()[-1]
    assert record.arguments == {
        "message": "mail dave@example.com, key [REDACTED]",
        "password": "[REDACTED]",
    }
    assert (record.result, record.body_redactions, record.body_truncated) == (None, None, None)


def test_it_truncates_a_result_above_the_cap(small_cap: None, mcp: tuple[str, str]) -> None:
    echo(mcp, {"message": "y" * 600 + " ok"})
    echo(mcp, {"message": "z" * 3000})

    small, large = mcp_logged()[-2:]
    assert small.arguments == {"message": "y" * 600 + " ok"} and not small.body_truncated
    assert large.arguments == {"_truncated": True, "_bytes": 3014}
    assert large.result.split("\n[TRUNCATED: ")[1].endswith(" bytes in all]")
    assert large.body_truncated is True
