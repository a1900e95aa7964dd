"""The gateways enforce `ai_gateway:use` and `mcp_gateway:use` for a key's owner, in the
key's team, and a role change reaches a warm key within the revision poll.

Bob is a developer calling through the real gateway on loopback (tests/conftest.py);
Alice, a superuser, changes his roles through the management API."""

import time
from collections.abc import Callable

import httpx
import openai
import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from accounts import access
from accounts.models import RoleAssignment, Team
from providers.models import Provider
from tests.conftest import LiveServer
from tests.factories import TeamFactory, make_key

MESSAGES = [{"role": "user", "content": "hi"}]


def chat(gateway: LiveServer, key: str) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )


def hold_only(user: User, slug: str, team: Team | None = None) -> None:
    user.role_assignments.all().delete()
    RoleAssignment.objects.create(user=user, role=access.builtin_role(slug), team=team)


def status_within(seconds: float, call: Callable[[], httpx.Response], wanted: int) -> int:
    """The status `call` answers with once it answers `wanted`, or at the deadline."""
    deadline = time.monotonic() + seconds
    status = call().status_code
    while status != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
        status = call().status_code
    return status


@pytest.fixture
def console(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_a_key_whose_owner_only_views_is_refused_in_openais_error_format(
    gateway: LiveServer, openai_provider: Provider, bob: User, bob_key: str
) -> None:
    hold_only(bob, "viewer")
    sdk = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=bob_key, max_retries=0)

    with pytest.raises(openai.PermissionDeniedError) as caught:
        sdk.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]

    assert caught.value.status_code == 403
    assert caught.value.code == "permission_denied"
    error = chat(gateway, bob_key).json()["error"]
    assert (error["type"], error["code"]) == ("permission_error", "permission_denied")
    assert "ai_gateway:use" in error["message"]


def test_taking_the_right_away_refuses_a_warm_key_within_the_revision_poll(
    gateway: LiveServer, openai_provider: Provider, bob: User, bob_key: str, console: Client
) -> None:
    assert chat(gateway, bob_key).status_code == 200  # the key is now in the gateway's cache
    developer = RoleAssignment.objects.get(user=bob, role__slug="developer")
    viewer = access.builtin_role("viewer")

    console.post(
        "/api/roles/assignments",
        {"user_id": bob.pk, "role_id": viewer.pk},
        content_type="application/json",
    )
    taken = console.delete(f"/api/roles/assignments/{developer.pk}")

    assert taken.status_code == 204
    poll = settings.CONFIG_POLL_SECONDS + 1
    assert status_within(poll, lambda: chat(gateway, bob_key), 403) == 403


def test_giving_the_right_back_lets_the_key_through_again(
    gateway: LiveServer, openai_provider: Provider, bob: User, bob_key: str, console: Client
) -> None:
    hold_only(bob, "viewer")
    assert chat(gateway, bob_key).status_code == 403

    given = console.post(
        "/api/roles/assignments",
        {"user_id": bob.pk, "role_id": access.builtin_role("developer").pk},
        content_type="application/json",
    )

    assert given.status_code == 201
    poll = settings.CONFIG_POLL_SECONDS + 1
    assert status_within(poll, lambda: chat(gateway, bob_key), 200) == 200


def test_a_role_held_in_a_team_lets_only_that_teams_keys_through(
    gateway: LiveServer, openai_provider: Provider, bob: User
) -> None:
    team_a, team_b = TeamFactory(name="A"), TeamFactory(name="B")
    hold_only(bob, "developer", team_a)
    _, in_a = make_key(bob, name="in a", team=team_a)
    _, in_b = make_key(bob, name="in b", team=team_b)
    _, teamless = make_key(bob, name="no team")

    statuses = [chat(gateway, key).status_code for key in (in_a, in_b, teamless)]

    assert statuses == [200, 403, 403]


def test_a_key_whose_owner_lacks_mcp_gateway_use_is_refused_on_the_mcp_gateway(
    gateway: LiveServer, bob: User
) -> None:
    hold_only(bob, "viewer")
    _, key = make_key(bob, name="mcp", surfaces=["mcp_gateway"])

    response = httpx.post(
        f"{gateway.url}/mcp",
        json={"jsonrpc": "2.0", "id": 0, "method": "ping"},
        headers={
            "Authorization": f"Bearer {key}",
            "Accept": "application/json, text/event-stream",
        },
        timeout=30,
    )

    assert response.status_code == 403
    assert "mcp_gateway:use" in response.json()["error"]["message"]
