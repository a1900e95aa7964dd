"""The console (Django admin) for keys and providers."""

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import ApiKey, Role, hash_key
from providers.models import Provider
from tests.factories import (
    AIModelFactory,
    ProviderFactory,
    RoleFactory,
    RouteFactory,
    TeamFactory,
    make_key,
)


@pytest.fixture
def console(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def test_it_shows_a_new_keys_plaintext_once(console: Client, bob: User) -> None:
    response = console.post(
        "/admin/accounts/apikey/add/",
        {
            "name": "bob ci",
            "owner": bob.pk,
            "surfaces": ["ai_gateway"],
            "allowed_models": "gpt-*\nclaude-*",
        },
        follow=True,
    )

    plaintext = re.search(r"tw-[0-9a-f]{96}", response.content.decode()).group(0)  # type: ignore[union-attr]
    key = ApiKey.objects.get(key_hash=hash_key(plaintext))
    assert "no-store" in response["Cache-Control"]
    assert key.allowed_models == ["gpt-*", "claude-*"]
    assert plaintext not in console.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()
    # Reloading the page that showed it issues nothing and shows nothing.
    again = console.get(f"/admin/accounts/apikey/{key.pk}/secret/", follow=True)
    assert plaintext not in again.content.decode()
    assert ApiKey.objects.count() == 1


def test_it_revokes_a_key_with_a_reason(console: Client, bob: User) -> None:
    key, _ = make_key(bob)

    console.post(f"/admin/accounts/apikey/{key.pk}/revoke/", {"reason": "laptop stolen"})

    key.refresh_from_db()
    assert key.revoked_reason == "laptop stolen"


def test_it_rotates_a_key_and_shows_the_successor_once(console: Client, bob: User) -> None:
    key, _ = make_key(bob)

    response = console.post(
        f"/admin/accounts/apikey/{key.pk}/rotate/", {"grace_hours": 1}, follow=True
    )

    plaintext = re.search(r"tw-[0-9a-f]{96}", response.content.decode()).group(0)  # type: ignore[union-attr]
    assert ApiKey.objects.get(key_hash=hash_key(plaintext)).rotated_from == key


def test_it_never_renders_a_provider_secret(console: Client) -> None:
    provider = ProviderFactory(api_key="sk-live-do-not-show")

    page = console.get(f"/admin/providers/provider/{provider.pk}/change/").content.decode()

    assert "sk-live-do-not-show" not in page
    assert provider.secret not in page


def save_provider_form(console: Client, provider: Provider, api_key: str) -> None:
    form = {
        "name": provider.name,
        "type": "openai",
        "base_url": "",
        "enabled": "on",
        "api_key": api_key,
    }
    response = console.post(f"/admin/providers/provider/{provider.pk}/change/", form)
    assert response.status_code == 302, response.content
    provider.refresh_from_db()


def test_it_keeps_a_provider_secret_when_the_field_is_left_empty(console: Client) -> None:
    provider = ProviderFactory(api_key="sk-keep")

    save_provider_form(console, provider, api_key="")

    assert provider.reveal_secret() == "sk-keep"


def test_it_replaces_a_provider_secret(console: Client) -> None:
    provider = ProviderFactory(api_key="sk-old")

    save_provider_form(console, provider, api_key="sk-new")

    assert provider.reveal_secret() == "sk-new"


@pytest.mark.parametrize(
    "page",
    [
        "/admin/",
        "/admin/accounts/apikey/",
        "/admin/accounts/team/",
        "/admin/providers/provider/",
        "/admin/providers/aimodel/",
        "/admin/audit/gatewaylog/",
        "/admin/accounts/organisation/",
    ],
)
def test_it_renders_every_console_page(console: Client, bob: User, page: str) -> None:
    make_key(bob)
    RouteFactory(model=AIModelFactory(), provider=ProviderFactory())
    TeamFactory()

    assert console.get(page).status_code == 200


def test_it_keeps_the_console_from_anonymous_visitors(db: None) -> None:
    assert Client().get("/admin/accounts/apikey/").status_code == 302


def test_it_shows_the_site_name_from_setup(console: Client) -> None:
    from accounts.models import Organisation

    Organisation.objects.update_or_create(pk=1, defaults={"name": "Acme AI"})

    assert "Acme AI" in console.get("/admin/").content.decode()


def test_it_exposes_provider_has_secret_only_as_a_flag(console: Client) -> None:
    ProviderFactory(name="openai", api_key="sk-x")

    page = console.get("/admin/providers/provider/").content.decode()

    assert "sk-x" not in page
    assert Provider.objects.get().has_secret


def save_role_form(console: Client, role: Role, mcp_tools: str) -> Any:
    form = {
        "name": role.name,
        "slug": role.slug,
        "description": "",
        "mcp_tools": mcp_tools,
        "permissions": "\n".join(role.permissions),
        "assignments-TOTAL_FORMS": "0",
        "assignments-INITIAL_FORMS": "0",
        "revisions-TOTAL_FORMS": "0",
        "revisions-INITIAL_FORMS": "0",
    }
    return console.post(f"/admin/accounts/role/{role.pk}/change/", form)


def test_it_edits_a_roles_mcp_tools_one_pattern_per_line(console: Client) -> None:
    role = RoleFactory()

    response = save_role_form(console, role, "github__*\n!github__delete_repo\n")

    role.refresh_from_db()
    assert response.status_code == 302, response.content
    assert role.mcp_tools == ["github__*", "!github__delete_repo"]


def test_it_lets_a_role_allow_no_mcp_tools(console: Client) -> None:
    role = RoleFactory()

    save_role_form(console, role, "")

    role.refresh_from_db()
    assert role.mcp_tools == []


def test_it_refuses_a_malformed_tool_pattern_on_a_role(console: Client) -> None:
    role = RoleFactory()

    response = save_role_form(console, role, "github__a*b")

    assert "mcp_tools" in response.context["adminform"].form.errors


def add_key(console: Client, owner: User, **fields: str) -> ApiKey:
    form = {"name": "mcp", "owner": owner.pk, "surfaces": ["mcp_gateway"], "allowed_models": "*"}
    response = console.post("/admin/accounts/apikey/add/", {**form, **fields})
    assert response.status_code == 302 and response["Location"].endswith("/secret/")
    return ApiKey.objects.get(name="mcp")


@pytest.mark.parametrize(
    ("fields", "stored"),
    [
        ({}, None),
        ({"limit_mcp_tools": "on", "mcp_tools": "github__*"}, ["github__*"]),
        ({"limit_mcp_tools": "on", "mcp_tools": ""}, []),
    ],
)
def test_it_tells_a_keys_role_tools_from_no_tools(
    console: Client, bob: User, fields: dict[str, str], stored: list[str] | None
) -> None:
    assert add_key(console, bob, **fields).mcp_tools == stored


def test_it_refuses_tool_patterns_on_a_key_that_is_not_limited(console: Client, bob: User) -> None:
    response = console.post(
        "/admin/accounts/apikey/add/",
        {"name": "mcp", "owner": bob.pk, "surfaces": ["mcp_gateway"], "mcp_tools": "github__*"},
    )

    assert "limit_mcp_tools" in response.context["adminform"].form.errors


def test_it_shows_a_keys_tool_limit_when_editing(console: Client, bob: User) -> None:
    key, _ = make_key(bob, mcp_tools=[])

    form = console.get(f"/admin/accounts/apikey/{key.pk}/change/").context["adminform"].form

    assert form["limit_mcp_tools"].value() is True
