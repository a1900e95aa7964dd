"""The console (Django admin) for keys and providers."""

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import ApiKey, hash_key
from providers.models import Provider
from tests.factories import AIModelFactory, ProviderFactory, RouteFactory, TeamFactory, make_key


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
    )

    plaintext = re.search(r"tw-[0-9a-f]{96}", response.content.decode()).group(0)  # type: ignore[union-attr]
    key = ApiKey.objects.get(key_hash=hash_key(plaintext))
    assert "no-store" in response["Cache-Control"]
    assert key.allowed_models == ["gpt-*", "claude-*"]
    assert plaintext not in console.get(f"/admin/accounts/apikey/{key.pk}/change/").content.decode()


def test_it_revokes_a_key_with_a_reason(console: Client, bob: User) -> None:
    key, _ = make_key(bob)

    console.post(f"/admin/accounts/apikey/{key.pk}/revoke/", {"reason": "laptop stolen"})

    key.refresh_from_db()
    assert key.revoked_reason == "laptop stolen"


def test_it_rotates_a_key_and_shows_the_successor_once(console: Client, bob: User) -> None:
    key, _ = make_key(bob)

    response = console.post(f"/admin/accounts/apikey/{key.pk}/rotate/", {"grace_hours": 1})

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
