"""The admin audit log: each change made in the console or through the management API
leaves one event — who, what, before and after, from where — and never a secret."""

import json

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import AsyncClient, Client, override_settings

from accounts.models import ApiKey, OidcConfig, RoleAssignment, RuntimeSetting, Team
from audit.changes import audited_models
from audit.context import acting
from audit.models import AuditEvent
from audit.redaction import REDACTED, scrub, secret_fields
from mcpgw.models import McpCredential, McpServer
from providers.models import Provider
from quotas.models import Budget
from tests.factories import (
    PASSWORD,
    ProviderFactory,
    RoleFactory,
    TeamFactory,
    UserFactory,
    make_key,
)

CONSOLE_SECRET = "sk-typed-in-the-console-0123456789"
API_SECRET = "sk-sent-through-the-api-0123456789"


@pytest.fixture
def console(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


@pytest.fixture
def alice_key(alice: User) -> tuple[ApiKey, str]:
    return make_key(alice, surfaces=["console"])


@pytest.fixture
def api(alice_key: tuple[ApiKey, str]) -> Client:
    """Alice's console key, as a management API client."""
    return Client(HTTP_AUTHORIZATION=f"Bearer {alice_key[1]}")


def changes() -> list[AuditEvent]:
    """Events other than sign-ins, oldest first."""
    return list(AuditEvent.objects.exclude(action__startswith="auth.").order_by("id"))


def everything_recorded() -> str:
    return json.dumps(list(AuditEvent.objects.values()), default=str)


def provider_form(**fields: str) -> dict[str, str]:
    return {
        "name": "openai-console",
        "type": "openai",
        "base_url": "",
        "enabled": "on",
        "api_key": CONSOLE_SECRET,
        "api_version": "",
        "region": "",
        "aws_access_key_id": "",
        "aws_session_token": "",
        "read_timeout": "",
        "stream_usage": "on",
        **fields,
    }


def test_it_records_a_provider_added_in_the_console(console: Client, alice: User) -> None:
    response = console.post("/admin/providers/provider/add/", provider_form())

    assert response.status_code == 302, response.content
    provider = Provider.objects.get(name="openai-console")
    [event] = changes()
    assert (event.action, event.object_type, event.object_id) == (
        "create",
        "providers.provider",
        str(provider.pk),
    )
    assert (event.actor_id, event.actor, event.via) == (alice.pk, "alice@example.com", "console")
    assert event.object_repr == "openai-console"
    assert event.before == {}
    assert event.after["name"] == "openai-console"
    assert event.after["secret"] == REDACTED


def test_it_never_records_a_key_typed_in_the_console(console: Client) -> None:
    console.post("/admin/providers/provider/add/", provider_form())

    stored = Provider.objects.get(name="openai-console").secret
    assert CONSOLE_SECRET not in everything_recorded()
    assert stored not in everything_recorded()


def test_it_records_a_deletion_in_the_console_with_what_was_deleted(
    console: Client, alice: User
) -> None:
    provider = ProviderFactory(name="old", api_key=CONSOLE_SECRET)

    response = console.post(f"/admin/providers/provider/{provider.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    [event] = changes()
    assert (event.action, event.object_id, event.after) == ("delete", str(provider.pk), {})
    assert event.before["name"] == "old"
    assert event.before["secret"] == REDACTED
    assert provider.secret not in everything_recorded()


def test_it_records_a_provider_created_through_the_api(
    api: Client, alice: User, alice_key: tuple[ApiKey, str]
) -> None:
    response = api.post(
        "/api/providers",
        {"name": "openai-api", "type": "openai", "api_key": API_SECRET},
        content_type="application/json",
    )

    assert response.status_code == 201, response.content
    [event] = changes()
    assert (event.action, event.object_type, event.object_id) == (
        "create",
        "providers.provider",
        str(response.json()["id"]),
    )
    assert (event.actor_id, event.actor) == (alice.pk, "alice@example.com")
    assert (event.via, event.api_key_prefix) == ("api", alice_key[0].prefix)
    assert event.after["secret"] == REDACTED
    assert API_SECRET not in everything_recorded()


def test_it_records_only_the_changed_fields_before_and_after(api: Client) -> None:
    provider = ProviderFactory(name="before", enabled=True)

    response = api.patch(
        f"/api/providers/{provider.pk}",
        {"name": "after", "enabled": False, "stream_usage": True},
        content_type="application/json",
    )

    assert response.status_code == 200, response.content
    [event] = changes()
    assert event.action == "update"
    assert event.before == {"name": "before", "enabled": True}
    assert event.after == {"name": "after", "enabled": False}


def test_it_shows_that_a_secret_changed_but_not_the_secret(api: Client) -> None:
    provider = ProviderFactory(api_key="sk-old-secret-value")

    api.patch(
        f"/api/providers/{provider.pk}", {"api_key": API_SECRET}, content_type="application/json"
    )

    [event] = changes()
    assert (event.before, event.after) == ({"secret": REDACTED}, {"secret": REDACTED})
    assert "sk-old-secret-value" not in everything_recorded()
    assert API_SECRET not in everything_recorded()


def test_it_records_nothing_for_a_save_that_changes_nothing(api: Client) -> None:
    provider = ProviderFactory(name="same")

    api.patch(f"/api/providers/{provider.pk}", {"name": "same"}, content_type="application/json")

    assert changes() == []


@pytest.mark.parametrize(
    ("trusted", "expected"),
    [(frozenset({"10.0.0.1"}), "203.0.113.9"), (frozenset(), "10.0.0.1")],
    ids=["trusted-proxy", "untrusted-peer"],
)
def test_it_records_the_client_address_believing_only_trusted_proxies(
    api: Client, trusted: frozenset[str], expected: str
) -> None:
    provider = ProviderFactory()

    with override_settings(TRUSTED_PROXIES=trusted):
        api.patch(
            f"/api/providers/{provider.pk}",
            {"enabled": False},
            content_type="application/json",
            REMOTE_ADDR="10.0.0.1",
            HTTP_X_FORWARDED_FOR="203.0.113.9",
            HTTP_USER_AGENT="ci-script/1.0",
        )

    [event] = changes()
    assert (event.client_ip, event.user_agent) == (expected, "ci-script/1.0")


def test_it_records_no_address_for_a_forwarded_value_that_is_not_one(api: Client) -> None:
    provider = ProviderFactory()

    with override_settings(TRUSTED_PROXIES=frozenset({"127.0.0.1"})):
        api.patch(
            f"/api/providers/{provider.pk}",
            {"enabled": False},
            content_type="application/json",
            HTTP_X_FORWARDED_FOR="unknown",
        )

    assert changes()[0].client_ip is None


def test_it_names_a_key_revocation(api: Client, alice: User) -> None:
    key, _ = make_key(alice, name="laptop")

    response = api.delete(f"/api/keys/{key.pk}?reason=left+the+company")

    assert response.status_code == 200, response.content
    [event] = changes()
    assert (event.action, event.object_type, event.object_id) == (
        "key.revoke",
        "accounts.apikey",
        str(key.pk),
    )
    assert event.after["revoked_reason"] == "left the company"
    assert event.before["revoked_at"] is None


def test_it_names_a_key_rotation_and_records_the_successor(api: Client, alice: User) -> None:
    key, _ = make_key(alice, name="laptop")

    response = api.post(f"/api/keys/{key.pk}/rotate", {}, content_type="application/json")

    assert response.status_code == 201, response.content
    successor = response.json()
    assert [(e.action, e.object_id) for e in changes()] == [
        ("create", str(successor["id"])),
        ("key.rotate", str(key.pk)),
    ]
    assert changes()[0].after["key_hash"] == REDACTED
    assert successor["api_key"] not in everything_recorded()
    assert ApiKey.objects.get(pk=successor["id"]).key_hash not in everything_recorded()


def test_it_names_a_role_assignment(alice: User, bob: User) -> None:
    role = RoleFactory(permissions=["audit:read"])

    with acting(alice):
        RoleAssignment.objects.create(user=bob, role=role)

    assigned = AuditEvent.objects.get(action="role.assign")
    assert (assigned.actor_id, assigned.via) == (alice.pk, "command")
    assert assigned.after["role"] == role.pk
    assert assigned.after["user"] == bob.pk


def test_it_records_a_relation_changed_as_ids_before_and_after(alice: User, bob: User) -> None:
    group = Group.objects.create(name="on-call")

    with acting(alice):
        bob.groups.add(group)

    [event] = changes()
    assert (event.object_type, event.object_id) == ("auth.user", str(bob.pk))
    assert (event.before, event.after) == ({"groups": []}, {"groups": [group.pk]})


def test_it_leaves_no_event_when_the_change_is_rolled_back(alice: User) -> None:
    with pytest.raises(RuntimeError), acting(alice), transaction.atomic():
        TeamFactory(name="never")
        raise RuntimeError("the rest of the change failed")

    assert not Team.objects.filter(name="never").exists()
    assert AuditEvent.objects.count() == 0


def test_it_records_nothing_outside_a_request_or_command(alice: User) -> None:
    ProviderFactory(name="from-a-job")
    TeamFactory(name="from-a-job-too")

    assert AuditEvent.objects.count() == 0


def test_it_redacts_a_secret_runtime_setting(alice: User) -> None:
    url = "https://hooks.example.com/services/T000/B000/abcdefsecret"

    with acting(alice):
        RuntimeSetting.objects.create(key="quotas.budget_alert_webhook_url", value=url)

    [event] = changes()
    assert event.after["value"] == REDACTED
    assert "abcdefsecret" not in everything_recorded()


def test_it_records_a_sign_in_with_the_address(db: None) -> None:
    user = UserFactory(username="carol@example.com", is_superuser=True)

    response = Client(REMOTE_ADDR="198.51.100.4").post(
        "/admin/login/", {"username": user.username, "password": PASSWORD}
    )

    assert response.status_code == 302
    event = AuditEvent.objects.get(action="auth.sign_in")
    assert (event.actor_id, event.actor, event.client_ip) == (
        user.pk,
        "carol@example.com",
        "198.51.100.4",
    )


def test_it_records_a_failed_sign_in_without_the_password(alice: User) -> None:
    Client().post("/admin/login/", {"username": "alice@example.com", "password": "Wr0ng-guess!"})

    event = AuditEvent.objects.get(action="auth.sign_in_failed")
    assert (event.actor, event.actor_id) == ("alice@example.com", None)
    assert "Wr0ng-guess!" not in everything_recorded()


def test_it_records_a_sign_out(console: Client, alice: User) -> None:
    console.post("/admin/logout/")

    event = AuditEvent.objects.get(action="auth.sign_out")
    assert event.actor_id == alice.pk


@pytest.mark.parametrize(
    ("model", "secrets"),
    [
        (Provider, {"secret", "session_token"}),
        (McpServer, {"static_secret", "oauth_client_secret"}),
        (McpCredential, {"access_token", "refresh_token"}),
        (ApiKey, {"key_hash"}),
        (User, {"password"}),
        (Budget, {"alert_webhook_url"}),
        (OidcConfig, {"client_secret", "tested_fingerprint"}),
    ],
)
def test_it_knows_which_fields_are_secret(model: type, secrets: set[str]) -> None:
    assert secret_fields(model) == secrets


def test_it_scrubs_credentials_out_of_urls_and_headers() -> None:
    value = {
        "url": "https://bot:hunter2@example.com/hook?token=abc123&channel=ops",
        "headers": {"Authorization": "Bearer xyz", "X-Api-Key": "k-1", "Accept": "text/plain"},
    }

    assert scrub(value) == {
        "url": "https://bot:[redacted]@example.com/hook?token=[redacted]&channel=ops",
        "headers": {"Authorization": REDACTED, "X-Api-Key": REDACTED, "Accept": "text/plain"},
    }


def test_it_audits_the_configuration_models_and_not_the_logs() -> None:
    audited = {model._meta.label_lower for model in audited_models()}

    assert audited >= {
        "auth.user",
        "accounts.organisation",
        "accounts.team",
        "accounts.membership",
        "accounts.role",
        "accounts.roleassignment",
        "accounts.apikey",
        "accounts.runtimesetting",
        "accounts.usersecurity",
        "accounts.oidcconfig",
        "providers.provider",
        "providers.aimodel",
        "providers.route",
        "quotas.ratelimitrule",
        "quotas.budget",
        "mcpgw.mcpserver",
        "mcpgw.mcpcredential",
    }
    assert not audited & {"audit.gatewaylog", "audit.mcplog", "audit.auditevent"}


@pytest.mark.django_db(transaction=True)
async def test_it_records_a_change_served_by_the_asgi_handler() -> None:
    alice = await User.objects.acreate(username="alice@example.com", is_superuser=True)
    _, key = await sync_to_async(make_key)(alice, surfaces=["console"])
    provider = await sync_to_async(ProviderFactory)(name="asgi")

    response = await AsyncClient().patch(
        f"/api/providers/{provider.pk}",
        {"enabled": False},
        content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )

    assert response.status_code == 200
    event = await AuditEvent.objects.aget()
    assert (event.actor_id, event.via, event.after) == (alice.pk, "api", {"enabled": False})
