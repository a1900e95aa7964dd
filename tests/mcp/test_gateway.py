"""The MCP gateway end to end: the official SDK client, in both protocol eras, against
`/mcp` on a running gateway, in front of real upstream servers (server-everything,
mcp-server-time behind supergateway, and the fixture server)."""

import asyncio
import json
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
import pytest
from django.contrib.auth.models import User
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client

from accounts.access import builtin_role
from accounts.models import Role, RoleAssignment
from audit.models import McpLog
from mcpgw import records
from mcpgw.models import McpServer
from tests.conftest import LiveServer, free_port
from tests.factories import McpCredentialFactory, McpServerFactory, RateLimitRuleFactory, make_key
from tests.mcp.upstreams import FixtureUpstream, UpstreamProcess, eventually

SURFACES = ["ai_gateway", "mcp_gateway"]


@asynccontextmanager
async def connect(
    url: str, key: str, mode: str = "legacy", **options: Any
) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(
            streamable_http_client(url, http_client=http), mode=mode, cache=None, **options
        ) as client,  # type: ignore[arg-type]
    ):
        yield client


def mcp_logged() -> list[McpLog]:
    assert records.writer.flush(10)
    return list(McpLog.objects.order_by("id"))


def developer(user: User) -> None:
    # New accounts hold it already (the default role); builtin_role recreates it when a
    # transactional test has emptied the tables.
    RoleAssignment.objects.get_or_create(user=user, role=builtin_role("developer"), team=None)


class Env:
    def __init__(self, gateway: LiveServer, key: str, fixture: FixtureUpstream) -> None:
        self.url = f"{gateway.url}/mcp"
        self.key = key
        self.fixture = fixture

    def post(self, body: Any, key: str | None = None, **headers: str) -> httpx.Response:
        sent = {
            "Authorization": f"Bearer {key or self.key}",
            "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json",
            **{k.replace("_", "-"): v for k, v in headers.items()},
        }
        return httpx.post(self.url, json=body, headers=sent, timeout=30)

    def initialize(self, version: str = "2025-11-25", key: str | None = None) -> str:
        response = self.post(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": version,
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            },
            key,
        )
        assert response.status_code == 200, response.text
        return response.headers["mcp-session-id"]


@pytest.fixture
def env(
    gateway: LiveServer,
    settings: Any,
    bob: User,
    everything_url: str,
    time_url: str,
    fixture_upstream: FixtureUpstream,
) -> Iterator[Env]:
    settings.MCP_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    developer(bob)
    McpServerFactory(name="everything", prefix="every", url=everything_url)
    McpServerFactory(name="time", prefix="time", url=time_url)
    McpServerFactory(
        name="fixture tools", prefix="fx", url=fixture_upstream.tools, timeout_seconds=5
    )
    McpServerFactory(name="fixture modern", prefix="modern", url=fixture_upstream.modern)
    _, key = make_key(bob, surfaces=SURFACES)
    yield Env(gateway, key, fixture_upstream)


def text_of(result: Any) -> str:
    return "".join(block.text for block in result.content if getattr(block, "type", "") == "text")


# --- the SDK client, both eras ---------------------------------------------------------


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28", "auto"])
def test_the_sdk_client_lists_and_calls_tools_of_every_upstream(env: Env, mode: str) -> None:
    async def scenario() -> tuple[set[str], str, str, str]:
        async with connect(env.url, env.key, mode) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            fx = await client.call_tool("fx__echo", {"message": "from the fixture"})
            every = await client.call_tool("every__echo", {"message": "from everything"})
            added = await client.call_tool("modern__add", {"a": 2, "b": 3})
            return names, text_of(fx), text_of(every), text_of(added)

    names, fx, every, added = asyncio.run(scenario())
    # The same tool name on two upstreams, each under its own prefix.
    assert {"fx__echo", "every__echo", "time__get_current_time", "modern__add"} <= names
    assert all(name.split("__", 1)[0] in {"every", "time", "fx", "modern"} for name in names)
    assert all(len("mcp__thinkwatch__" + name) <= 64 for name in names)
    assert "from the fixture" in fx
    assert "from everything" in every
    assert "5" in added


def test_time_through_supergateway_answers(env: Env) -> None:
    async def scenario() -> Any:
        async with connect(env.url, env.key) as client:
            return await client.call_tool("time__get_current_time", {"timezone": "UTC"})

    result = asyncio.run(scenario())
    assert not result.is_error
    assert "UTC" in text_of(result)


def test_schemas_annotations_and_structured_content_pass_through_unchanged(env: Env) -> None:
    async def upstream_tool() -> Any:
        async with (
            httpx2.AsyncClient() as http,
            Client(
                streamable_http_client(env.fixture.tools, http_client=http),
                mode="legacy",
                cache=None,
            ) as client,
        ):
            return next(t for t in (await client.list_tools()).tools if t.name == "structured")

    async def through_gateway() -> tuple[Any, Any]:
        async with connect(env.url, env.key) as client:
            tools = (await client.list_tools()).tools
            tool = next(t for t in tools if t.name == "fx__structured")
            return tool, await client.call_tool("fx__structured", {"city": "Oslo"})

    original = asyncio.run(upstream_tool())
    tool, result = asyncio.run(through_gateway())
    assert tool.input_schema == original.input_schema
    assert tool.output_schema == original.output_schema
    assert tool.annotations == original.annotations
    assert tool.title == original.title
    assert result.structured_content is not None
    assert result.is_error is False


def test_a_tool_error_is_relayed_as_is_and_logged_as_a_tool_error(env: Env) -> None:
    async def scenario() -> Any:
        async with connect(env.url, env.key) as client:
            return await client.call_tool("fx__fail", {})

    result = asyncio.run(scenario())
    assert result.is_error is True
    assert mcp_logged()[-1].status == "tool_error"


def test_lists_are_deterministic(env: Env) -> None:
    first = env.post(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, MCP_Protocol_Version="2026-07-28"
    )
    # The stateless era needs its envelope: use the session era for a byte comparison.
    session = env.initialize()
    one = env.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, Mcp_Session_Id=session)
    two = env.post({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, Mcp_Session_Id=session)
    assert first.status_code == 400  # no _meta envelope
    assert one.status_code == 200
    assert one.content == two.content


# --- session-era transport -------------------------------------------------------------


def test_initialize_negotiates_the_version_and_binds_the_session_to_the_key(
    env: Env, bob: User
) -> None:
    assert (
        env.post(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-06-18",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "1"},
                },
            }
        ).json()["result"]["protocolVersion"]
        == "2025-06-18"
    )
    newest = env.post(
        {
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": "1999-01-01",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
    )
    assert newest.json()["result"]["protocolVersion"] == "2025-11-25"
    session = newest.headers["mcp-session-id"]
    assert 32 <= len(session) <= 128 and all(0x21 <= ord(c) <= 0x7E for c in session)

    initialized = env.post(
        {"jsonrpc": "2.0", "method": "notifications/initialized"}, Mcp_Session_Id=session
    )
    assert initialized.status_code == 202 and initialized.content == b""
    assert (
        env.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, Mcp_Session_Id=session).json()[
            "result"
        ]
        == {}
    )
    assert env.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 400
    assert (
        env.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, Mcp_Session_Id="f" * 64).status_code
        == 404
    )

    _, other_key = make_key(bob, surfaces=SURFACES, name="another key")
    stolen = env.post(
        {"jsonrpc": "2.0", "id": 1, "method": "ping"}, key=other_key, Mcp_Session_Id=session
    )
    assert stolen.status_code == 404

    ended = httpx.delete(
        env.url, headers={"Authorization": f"Bearer {env.key}", "Mcp-Session-Id": session}
    )
    assert ended.status_code == 204
    assert (
        env.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}, Mcp_Session_Id=session).status_code
        == 404
    )


def test_the_transport_refuses_what_it_must(env: Env) -> None:
    session = env.initialize()
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        {"jsonrpc": "2.0", "id": 2, "method": "ping"},
    ]
    assert env.post(batch, Mcp_Session_Id=session).status_code == 400
    evil = env.post(
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        Mcp_Session_Id=session,
        Origin="http://evil.example",
    )
    assert evil.status_code == 403
    bad_version = env.post(
        {"jsonrpc": "2.0", "id": 1, "method": "ping"},
        Mcp_Session_Id=session,
        MCP_Protocol_Version="1999-01-01",
    )
    assert bad_version.status_code == 400
    plain = httpx.post(
        env.url,
        content=b"hello",
        headers={
            "Authorization": f"Bearer {env.key}",
            "Content-Type": "text/plain",
            "Mcp-Session-Id": session,
        },
    )
    assert plain.status_code == 415
    unknown = env.post(
        {"jsonrpc": "2.0", "id": 7, "method": "nope/nothing"}, Mcp_Session_Id=session
    ).json()
    assert unknown["error"]["code"] == -32601
    no_key = httpx.post(env.url, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert no_key.status_code == 401


def test_a_key_without_the_mcp_surface_is_refused(env: Env, bob: User) -> None:
    _, ai_only = make_key(bob, surfaces=["ai_gateway"], name="ai only")
    assert (
        env.post(
            {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {}}, key=ai_only
        ).status_code
        == 403
    )


# --- stateless-era transport -----------------------------------------------------------

MODERN_META = {
    "io.modelcontextprotocol/protocolVersion": "2026-07-28",
    "io.modelcontextprotocol/clientCapabilities": {},
    "io.modelcontextprotocol/clientInfo": {"name": "t", "version": "1"},
}


def modern(
    env: Env, method: str, params: dict[str, Any] | None = None, **headers: str
) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": method,
        "params": {**(params or {}), "_meta": MODERN_META},
    }
    sent = {"MCP_Protocol_Version": "2026-07-28", "Mcp_Method": method, **headers}
    return env.post(body, **sent)


def test_the_stateless_era_checks_its_headers_and_versions(env: Env) -> None:
    discover = modern(env, "server/discover")
    assert discover.status_code == 200
    result = discover.json()["result"]
    assert "2026-07-28" in result["supportedVersions"] and result["resultType"] == "complete"
    assert "mcp-session-id" not in discover.headers

    mismatch = modern(env, "tools/list", Mcp_Method="prompts/list")
    assert mismatch.status_code == 400 and mismatch.json()["error"]["code"] == -32020
    wrong_name = modern(
        env, "tools/call", {"name": "fx__echo", "arguments": {"message": "x"}}, Mcp_Name="fx__fail"
    )
    assert wrong_name.json()["error"]["code"] == -32020

    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/list",
        "params": {
            "_meta": {**MODERN_META, "io.modelcontextprotocol/protocolVersion": "2030-01-01"}
        },
    }
    future = env.post(body, MCP_Protocol_Version="2030-01-01", Mcp_Method="tools/list")
    assert future.status_code == 400
    assert future.json()["error"]["code"] == -32022
    assert "2026-07-28" in future.json()["error"]["data"]["supported"]

    unknown = modern(env, "nope/nothing")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == -32601
    listed = modern(env, "tools/list").json()["result"]
    assert listed["cacheScope"] == "private" and listed["resultType"] == "complete"
    assert (
        httpx.get(
            env.url,
            headers={"Authorization": f"Bearer {env.key}", "MCP-Protocol-Version": "2026-07-28"},
        ).status_code
        == 405
    )


# --- aggregation -----------------------------------------------------------------------


def test_pagination_uses_the_gateways_own_cursor(
    env: Env, settings: Any, fixture_upstream: FixtureUpstream
) -> None:
    settings.MCP_PAGE_SIZE = 7
    McpServerFactory(name="paged", prefix="paged", url=fixture_upstream.paged)
    session = env.initialize()
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"cursor": cursor} if cursor else {}
        result = env.post(
            {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": params},
            Mcp_Session_Id=session,
        ).json()["result"]
        assert len(result["tools"]) <= 7
        names += [tool["name"] for tool in result["tools"]]
        pages += 1
        cursor = result.get("nextCursor")
        if not cursor:
            break
    paged = [n for n in names if n.startswith("paged__")]
    assert paged == [f"paged__tool_{i:02d}" for i in range(25)]  # all pages, in order
    assert len(names) == len(set(names)) and pages >= 4
    bad = env.post(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {"cursor": "garbage"}},
        Mcp_Session_Id=session,
    ).json()
    assert bad["error"]["code"] == -32602


def test_resources_and_prompts_are_namespaced_and_readable(env: Env) -> None:
    async def scenario() -> tuple[list[str], str, Any]:
        async with connect(env.url, env.key) as client:
            resources = [str(r.uri) for r in (await client.list_resources()).resources]
            mine = next(u for u in resources if u.startswith("twmcp://fx/"))
            read = await client.read_resource(mine)
            prompts = [p.name for p in (await client.list_prompts()).prompts]
            fx_prompt = next(p for p in prompts if p.startswith("fx__"))
            return (
                resources,
                str(read.contents[0].uri),
                (fx_prompt, await client.get_prompt(fx_prompt, {"name": "Ada"})),
            )

    resources, read_uri, (_prompt_name, prompt) = asyncio.run(scenario())
    assert any(u.startswith("twmcp://every/") for u in resources)
    assert read_uri.startswith("twmcp://fx/")
    assert prompt.messages


def test_progress_notifications_reach_the_caller(env: Env) -> None:
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    async def scenario() -> Any:
        async with connect(env.url, env.key) as client:
            return await client.call_tool(
                "fx__progress", {"steps": 3}, progress_callback=on_progress
            )

    result = asyncio.run(scenario())
    assert not result.is_error
    assert len(seen) == 3 and seen == sorted(seen)


def test_cancelling_a_call_stops_it_upstream(env: Env) -> None:
    session = env.initialize()

    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            headers = {
                "Authorization": f"Bearer {env.key}",
                "Accept": "application/json",
                "Mcp-Session-Id": session,
            }
            call = asyncio.create_task(
                http.post(
                    env.url,
                    headers=headers,
                    json={
                        "jsonrpc": "2.0",
                        "id": 42,
                        "method": "tools/call",
                        "params": {"name": "fx__slow", "arguments": {"seconds": 10}},
                    },
                )
            )
            await asyncio.sleep(0.0)
            for _ in range(100):
                if env.fixture.calls("tools", "slow"):
                    break
                await asyncio.sleep(0.05)
            cancel = await http.post(
                env.url,
                headers=headers,
                json={
                    "jsonrpc": "2.0",
                    "method": "notifications/cancelled",
                    "params": {"requestId": 42},
                },
            )
            assert cancel.status_code == 202
            answer = await asyncio.wait_for(call, 5)
            assert answer.json()["error"]["code"] == -32800

    asyncio.run(scenario())
    assert eventually(lambda: env.fixture.cancelled("tools", "slow"), 1) == 1
    assert mcp_logged()[-1].status == "cancelled"


# --- access ----------------------------------------------------------------------------


def test_tool_patterns_filter_lists_and_block_calls(env: Env, bob: User) -> None:
    _, narrow = make_key(bob, surfaces=SURFACES, name="narrow", mcp_tools=["fx__*", "!fx__crash"])

    async def scenario() -> tuple[set[str], Any]:
        async with connect(env.url, narrow) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            with pytest.raises(MCPError) as denied:
                await client.call_tool("fx__crash", {})
            return names, denied.value

    names, denied = asyncio.run(scenario())
    assert "fx__echo" in names and "fx__crash" not in names
    assert not any(name.startswith(("every__", "time__")) for name in names)
    assert denied.error.code == -32003
    assert env.fixture.calls("tools", "crash") == 0
    record = mcp_logged()[-1]
    assert (record.status, record.name, record.server) == ("denied", "fx__crash", "fixture tools")


def test_a_role_denial_wins_and_applies_to_an_open_session(env: Env, bob: User) -> None:
    session = env.initialize()

    def call() -> dict[str, Any]:
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "tools/call",
            "params": {"name": "fx__echo", "arguments": {"message": "hi"}},
        }
        return env.post(body, Mcp_Session_Id=session).json()

    assert "result" in call()
    Role.objects.filter(slug="developer").update(mcp_tools=["*", "!fx__echo"])
    Role.objects.get(slug="developer").save()  # the signal that tells every process
    assert eventually(lambda: call().get("error", {}).get("code"), -32003) == -32003


def test_a_user_whose_roles_allow_no_tools_lists_none(env: Env) -> None:
    nobody = User.objects.create(username="nobody@example.com")
    nobody.role_assignments.all().delete()
    toolless = Role.objects.create(
        name="No tools", slug="no-tools", permissions=["mcp_gateway:use"], mcp_tools=[]
    )
    RoleAssignment.objects.create(user=nobody, role=toolless)
    _, key = make_key(nobody, surfaces=SURFACES, name="nobody")
    session = env.initialize(key=key)
    listed = env.post(
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}, key=key, Mcp_Session_Id=session
    ).json()
    assert listed["result"]["tools"] == []


def test_a_user_without_mcp_gateway_use_is_refused(env: Env) -> None:
    nobody = User.objects.create(username="nobody@example.com")
    nobody.role_assignments.all().delete()
    _, key = make_key(nobody, surfaces=SURFACES, name="nobody")

    response = env.post({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}, key=key)

    assert response.status_code == 403
    assert "mcp_gateway:use" in response.text


# --- credentials -----------------------------------------------------------------------


def test_each_user_gets_their_own_upstream_token_and_never_the_gateway_key(
    env: Env, bob: User, alice: User
) -> None:
    server = McpServerFactory(
        name="personal", prefix="me", url=env.fixture.tools, auth_mode="per_user_token"
    )
    McpCredentialFactory(user=bob, server=server, tokens=("bobs-upstream-token", ""))
    McpCredentialFactory(user=alice, server=server, tokens=("alices-upstream-token", ""))
    developer(alice)
    _, alice_key = make_key(alice, surfaces=SURFACES, name="alice")

    async def whoami(key: str) -> str:
        async with connect(env.url, key) as client:
            return text_of(await client.call_tool("me__whoami", {}))

    bobs = asyncio.run(whoami(env.key))
    alices = asyncio.run(whoami(alice_key))
    assert "bobs-upstream-token" in bobs and "alices-upstream-token" not in bobs
    assert "alices-upstream-token" in alices and "bobs-upstream-token" not in alices
    assert env.key not in bobs and "tw-" not in bobs


def test_a_missing_credential_answers_with_the_connect_url(env: Env) -> None:
    server = McpServerFactory(
        name="personal", prefix="me", url=env.fixture.tools, auth_mode="per_user_token"
    )

    async def scenario() -> MCPError:
        async with connect(env.url, env.key) as client:
            with pytest.raises(MCPError) as missing:
                await client.call_tool("me__whoami", {})
            return missing.value

    error = asyncio.run(scenario())
    assert error.error.code == -32042
    assert f"/mcp/connect/{server.pk}/" in error.error.message
    assert error.error.data["elicitations"][0]["url"].endswith(f"/mcp/connect/{server.pk}/")
    assert mcp_logged()[-1].status == "credential_missing"


# --- limits, failures, audit -----------------------------------------------------------


def test_tool_calls_are_rate_limited_per_server(env: Env) -> None:
    server = McpServer.objects.get(prefix="fx")
    RateLimitRuleFactory(
        subject_kind="mcp_server", subject_id=str(server.pk), surface="mcp_gateway", limit=2
    )

    async def scenario() -> MCPError:
        async with connect(env.url, env.key) as client:
            await client.call_tool("fx__echo", {"message": "1"})
            await client.call_tool("fx__echo", {"message": "2"})
            await client.call_tool("every__echo", {"message": "another server"})
            with pytest.raises(MCPError) as limited:
                await client.call_tool("fx__echo", {"message": "3"})
            return limited.value

    error = asyncio.run(scenario())
    assert error.error.code == -32005
    assert error.error.data["retryAfter"] >= 1
    assert env.fixture.calls("tools", "echo") == 2
    assert [r.status for r in mcp_logged()][-1] == "rate_limited"


def test_an_upstream_that_is_down_takes_only_its_own_tools_away(env: Env) -> None:
    McpServerFactory(name="gone", prefix="gone", url=f"http://127.0.0.1:{free_port()}/mcp")

    async def scenario() -> tuple[set[str], MCPError, str]:
        async with connect(env.url, env.key) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            with pytest.raises(MCPError) as down:
                await client.call_tool("gone__anything", {})
            still = text_of(await client.call_tool("fx__echo", {"message": "still here"}))
            return names, down.value, still

    names, down, still = asyncio.run(scenario())
    assert "fx__echo" in names and not any(n.startswith("gone__") for n in names)
    assert down.error.code == -32004
    assert "still here" in still
    assert mcp_logged()[-2].status == "upstream_error"


def test_a_slow_upstream_times_out_without_holding_up_the_others(env: Env) -> None:
    McpServer.objects.filter(prefix="fx").update(timeout_seconds=0.5)
    McpServer.objects.get(prefix="fx").save()

    async def scenario() -> tuple[MCPError, str]:
        async with connect(env.url, env.key) as client:
            with pytest.raises(MCPError) as slow:
                await client.call_tool("fx__slow", {"seconds": 5})
            return slow.value, text_of(await client.call_tool("every__echo", {"message": "fine"}))

    error, fine = asyncio.run(scenario())
    assert error.error.code == -32001
    assert "fine" in fine
    assert [r.status for r in mcp_logged()][-2] == "timeout"


def test_every_call_is_audited_with_its_secrets_redacted(env: Env, bob: User) -> None:
    async def scenario() -> None:
        async with connect(env.url, env.key) as client:
            await client.call_tool(
                "fx__echo",
                {
                    "message": "use sk-abcdefghijklmnopqrstuvwx please",
                    "password": "hunter2",
                    "nested": {"api_key": "k-123"},
                },
            )

    asyncio.run(scenario())
    record = mcp_logged()[-1]
    assert (record.status, record.method, record.name, record.upstream_name) == (
        "ok",
        "tools/call",
        "fx__echo",
        "echo",
    )
    assert record.user_id == bob.pk and record.session_id and record.latency_ms > 0
    assert record.arguments["password"] == "[REDACTED]"
    assert record.arguments["nested"]["api_key"] == "[REDACTED]"
    assert "sk-abcdefghijklmnopqrstuvwx" not in record.arguments["message"]
    assert "please" in record.arguments["message"]


def test_open_sessions_hear_that_the_tool_list_changed(
    env: Env, fixture_upstream: FixtureUpstream
) -> None:
    session = env.initialize()
    heard: list[str] = []

    def listen() -> None:
        headers = {
            "Authorization": f"Bearer {env.key}",
            "Accept": "text/event-stream",
            "Mcp-Session-Id": session,
        }
        with httpx.stream("GET", env.url, headers=headers, timeout=10) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    heard.append(json.loads(line[6:])["method"])
                    return

    listener = threading.Thread(target=listen)
    listener.start()
    time.sleep(0.3)  # the stream is open
    McpServerFactory(name="paged", prefix="paged", url=fixture_upstream.paged)  # a new upstream
    listener.join(10)
    assert heard == ["notifications/tools/list_changed"]


def test_an_upstream_that_restarts_is_reconnected_transparently(
    env: Env, upstream_logs: Any
) -> None:
    port = free_port()
    args = [sys.executable, "-m", "tests.mcp.fixture_server", "--port", str(port)]
    McpServerFactory(name="restarting", prefix="rs", url=f"http://127.0.0.1:{port}/tools/mcp")

    def echo() -> str:
        async def scenario() -> str:
            async with connect(env.url, env.key) as client:
                return text_of(await client.call_tool("rs__echo", {"message": "again"}))

        return asyncio.run(scenario())

    process = UpstreamProcess("restarting", args, port, upstream_logs, "/stats").start()
    try:
        assert "again" in echo()
        process.stop()
        process.start()  # same port, new process: the gateway's upstream session is gone
        assert "again" in echo()
    finally:
        process.stop()


def test_the_breaker_opens_after_repeated_failures(env: Env, settings: Any) -> None:
    settings.MCP_BREAKER_FAILURES = 2
    McpServerFactory(name="gone", prefix="gone", url=f"http://127.0.0.1:{free_port()}/mcp")

    async def scenario() -> list[str]:
        messages = []
        async with connect(env.url, env.key) as client:
            for _ in range(3):
                with pytest.raises(MCPError) as failed:
                    await client.call_tool("gone__x", {})
                messages.append(failed.value.error.message)
        return messages

    messages = asyncio.run(scenario())
    assert "circuit open" not in messages[0] and "circuit open" in messages[2]


def test_the_address_is_checked_again_when_connecting(env: Env, settings: Any) -> None:
    settings.MCP_ALLOWED_NETWORKS = []  # registered while allowed; no longer

    async def scenario() -> MCPError:
        async with connect(env.url, env.key) as client:
            with pytest.raises(MCPError) as refused:
                await client.call_tool("fx__echo", {"message": "x"})
            return refused.value

    error = asyncio.run(scenario())
    assert error.error.code == -32004 and "loopback" in error.error.message
    assert env.fixture.calls("tools", "echo") == 0


def test_stateless_clients_subscribe_to_list_changes(
    env: Env, fixture_upstream: FixtureUpstream
) -> None:
    heard: list[dict[str, Any]] = []
    wanted = {"toolsListChanged": True, "resourceSubscriptions": ["twmcp://fx/fixture://greeting"]}

    def listen() -> None:
        body = {
            "jsonrpc": "2.0",
            "id": "sub-1",
            "method": "subscriptions/listen",
            "params": {"notifications": wanted, "_meta": MODERN_META},
        }
        headers = {
            "Authorization": f"Bearer {env.key}",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": "2026-07-28",
            "Mcp-Method": "subscriptions/listen",
        }
        with httpx.stream("POST", env.url, json=body, headers=headers, timeout=10) as stream:
            for line in stream.iter_lines():
                if line.startswith("data: "):
                    heard.append(json.loads(line[6:]))
                    if len(heard) == 2:
                        return

    listener = threading.Thread(target=listen)
    listener.start()
    time.sleep(0.3)
    McpServerFactory(name="paged", prefix="paged", url=fixture_upstream.paged)
    listener.join(10)
    acknowledged, changed = heard
    assert acknowledged["method"] == "notifications/subscriptions/acknowledged"
    assert acknowledged["params"]["notifications"] == {
        "toolsListChanged": True
    }  # no resource subscriptions
    assert changed["method"] == "notifications/tools/list_changed"
    assert changed["params"]["_meta"]["io.modelcontextprotocol/subscriptionId"] == "sub-1"


def test_closing_a_stateless_request_cancels_it_upstream(env: Env) -> None:
    body = {
        "jsonrpc": "2.0",
        "id": 9,
        "method": "tools/call",
        "params": {"name": "fx__slow", "arguments": {"seconds": 10}, "_meta": MODERN_META},
    }
    headers = {
        "Authorization": f"Bearer {env.key}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "fx__slow",
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(env.url, json=body, headers=headers, timeout=httpx.Timeout(30, read=1.0))
    assert eventually(lambda: env.fixture.cancelled("tools", "slow"), 1) == 1
    assert eventually(lambda: [r.status for r in mcp_logged()][-1:], ["cancelled"]) == ["cancelled"]


def test_a_body_over_the_limit_gets_a_json_rpc_413(env: Env, settings: Any) -> None:
    settings.GATEWAY_MAX_BODY_BYTES = 2048
    session = env.initialize()
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "fx__echo", "arguments": {"message": "x" * 5000}},
    }
    answer = env.post(body, Mcp_Session_Id=session)
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == -32600
    assert env.fixture.calls("tools", "echo") == 0
