"""The key lifecycle through the management API, checked at the gateway."""

import openai
import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import ApiKey, Role, RoleAssignment
from providers.models import Provider
from tests.conftest import LiveServer
from tests.factories import make_key

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def api(alice: User) -> Client:
    """Alice's console key, as a management API client."""
    _, key = make_key(alice, surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def chat(gateway: LiveServer, key: str) -> str | None:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
    return (
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        .choices[0]
        .message.content
    )


def create(api: Client, **fields: object) -> dict:  # type: ignore[type-arg]
    response = api.post("/api/keys", {"name": "ci", **fields}, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()  # type: ignore[no-any-return]


def test_it_returns_the_plaintext_only_when_creating(api: Client) -> None:
    created = create(api)

    listed = api.get("/api/keys").json()
    fetched = api.get(f"/api/keys/{created['id']}").json()
    assert created["api_key"].startswith("tw-") and len(created["api_key"]) == 99
    assert created["api_key"] not in str(listed) + str(fetched)
    assert "api_key" not in fetched


def test_it_stores_only_a_hash(api: Client) -> None:
    created = create(api)

    stored = ApiKey.objects.get(pk=created["id"])
    assert created["api_key"] not in str(vars(stored))


def test_it_makes_the_caller_the_owner_by_default(api: Client, alice: User) -> None:
    assert create(api)["owner_id"] == alice.pk


def test_it_makes_a_service_key_when_owner_is_null(api: Client) -> None:
    assert create(api, owner_id=None)["owner_id"] is None


def test_it_rejects_an_unknown_surface(api: Client) -> None:
    response = api.post(
        "/api/keys", {"name": "x", "surfaces": ["admin"]}, content_type="application/json"
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-2:] == ["surfaces", 0]


def test_it_rejects_an_empty_model_list(api: Client) -> None:
    response = api.post(
        "/api/keys", {"name": "x", "allowed_models": []}, content_type="application/json"
    )

    assert response.status_code == 422


def test_it_keeps_a_rotated_key_working_during_its_grace_period(
    api: Client, gateway: LiveServer, openai_provider: Provider
) -> None:
    old = create(api)
    new = api.post(
        f"/api/keys/{old['id']}/rotate", {"grace_hours": 24}, content_type="application/json"
    ).json()

    assert chat(gateway, old["api_key"])
    assert chat(gateway, new["api_key"])
    assert api.get(f"/api/keys/{old['id']}").json()["state"] == "rotating"


def test_it_stops_a_rotated_key_when_its_grace_period_ends(
    api: Client, gateway: LiveServer, openai_provider: Provider
) -> None:
    old = create(api)
    api.post(f"/api/keys/{old['id']}/rotate", {"grace_hours": 0}, content_type="application/json")

    with pytest.raises(openai.AuthenticationError) as caught:
        chat(gateway, old["api_key"])
    assert caught.value.code == "rotated_api_key"


def test_it_refuses_to_rotate_a_key_twice(api: Client) -> None:
    old = create(api)
    api.post(f"/api/keys/{old['id']}/rotate", {}, content_type="application/json")

    again = api.post(f"/api/keys/{old['id']}/rotate", {}, content_type="application/json")

    assert again.status_code == 409


def test_it_needs_a_reason_to_revoke(api: Client) -> None:
    key = create(api)

    response = api.delete(f"/api/keys/{key['id']}")

    assert response.status_code == 422
    assert api.get(f"/api/keys/{key['id']}").json()["state"] == "active"


def test_it_revokes_a_key_everywhere(
    api: Client, gateway: LiveServer, openai_provider: Provider
) -> None:
    key = create(api)
    assert chat(gateway, key["api_key"])

    revoked = api.delete(f"/api/keys/{key['id']}?reason=left+the+company").json()

    assert (revoked["state"], revoked["revoked_reason"]) == ("revoked", "left the company")
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, key["api_key"])


def test_it_lists_revoked_keys_in_the_archive(api: Client) -> None:
    key = create(api)
    api.delete(f"/api/keys/{key['id']}?reason=done")

    current = [k["id"] for k in api.get("/api/keys").json()]
    archived = [k["id"] for k in api.get("/api/keys?archived=true").json()]
    assert key["id"] not in current
    assert key["id"] in archived


def test_it_updates_a_keys_models(api: Client) -> None:
    key = create(api)

    response = api.patch(
        f"/api/keys/{key['id']}", {"allowed_models": ["claude-*"]}, content_type="application/json"
    )

    assert response.json()["allowed_models"] == ["claude-*"]


def test_it_leaves_a_keys_mcp_tools_to_its_roles_by_default(api: Client) -> None:
    assert create(api)["mcp_tools"] is None


def test_it_limits_a_key_to_mcp_tools(api: Client) -> None:
    created = create(api, surfaces=["mcp_gateway"], mcp_tools=["github__*", "!github__delete"])

    assert ApiKey.objects.get(pk=created["id"]).mcp_tools == ["github__*", "!github__delete"]


def test_it_refuses_a_malformed_tool_pattern(api: Client) -> None:
    response = api.post(
        "/api/keys", {"name": "ci", "mcp_tools": ["github__a*b"]}, content_type="application/json"
    )

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "mcp_tools"


@pytest.mark.parametrize("tools", [[], ["linear__*"], None])
def test_it_updates_a_keys_mcp_tools(api: Client, tools: list[str] | None) -> None:
    key = create(api, mcp_tools=["github__*"])

    response = api.patch(
        f"/api/keys/{key['id']}", {"mcp_tools": tools}, content_type="application/json"
    )

    assert response.json()["mcp_tools"] == tools
    assert ApiKey.objects.get(pk=key["id"]).mcp_tools == tools


def test_it_keeps_a_keys_mcp_tools_when_rotating(api: Client) -> None:
    key = create(api, mcp_tools=[])

    successor = api.post(
        f"/api/keys/{key['id']}/rotate", {"grace_hours": 1}, content_type="application/json"
    ).json()

    assert successor["mcp_tools"] == []


def test_it_refuses_a_key_without_the_console_surface(bob: User) -> None:
    bob.is_staff = True
    bob.save()
    _, key = make_key(bob, surfaces=["ai_gateway"])

    response = Client(HTTP_AUTHORIZATION=f"Bearer {key}").get("/api/keys")

    assert response.status_code == 403


def test_it_refuses_a_console_key_of_a_user_without_console_rights(bob: User) -> None:
    gateway_only = Role.objects.create(name="Gateway only", slug="gw", permissions=["*:use"])
    bob.role_assignments.all().delete()
    RoleAssignment.objects.create(user=bob, role=gateway_only)
    _, key = make_key(bob, surfaces=["console"])

    response = Client(HTTP_AUTHORIZATION=f"Bearer {key}").get("/api/keys")

    assert response.status_code == 403


def test_it_refuses_anonymous_callers(db: None) -> None:
    assert Client().get("/api/keys").status_code == 401


def test_it_accepts_an_admin_session(alice: User) -> None:
    client = Client()
    client.force_login(alice)

    assert client.get("/api/keys").status_code == 200


def test_it_requires_csrf_for_session_writes(alice: User) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)

    response = client.post("/api/keys", {"name": "x"}, content_type="application/json")

    assert response.status_code == 403
