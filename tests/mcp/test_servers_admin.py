"""The console (Django admin) for upstream MCP servers, users' credentials and the MCP log."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings

from audit.models import McpLog
from mcpgw import ssrf
from mcpgw.models import McpCredential, McpServer
from tests.factories import McpCredentialFactory, McpLogFactory, McpServerFactory

PUBLIC_URL = "https://1.1.1.1/mcp"
SHARED_SECRET = "ghp-shared-do-not-show"
CLIENT_SECRET = "oauth-client-do-not-show"
ADD = "/admin/mcpgw/mcpserver/add/"


@pytest.fixture(autouse=True)
def _no_allowed_networks(settings: Settings) -> Iterator[None]:
    settings.MCP_ALLOWED_NETWORKS = []
    ssrf._allowed.cache_clear()
    yield
    ssrf._allowed.cache_clear()


@pytest.fixture
def console(alice: User) -> Client:
    client = Client()
    client.force_login(alice)
    return client


def server_form(**fields: Any) -> dict[str, Any]:
    return {
        "name": "GitHub",
        "prefix": "github",
        "url": PUBLIC_URL,
        "description": "",
        "enabled": "on",
        "timeout_seconds": "30",
        "auth_mode": "none",
        "header_name": "Authorization",
        "header_scheme": "Bearer",
        "shared_secret": "",
        "client_secret": "",
        "oauth_issuer": "",
        "oauth_authorization_endpoint": "",
        "oauth_token_endpoint": "",
        "oauth_client_id": "",
        "oauth_scopes": "",
        **fields,
    }


def form_errors(response: Any) -> dict[str, Any]:
    assert response.status_code == 200, response.status_code
    return dict(response.context["adminform"].form.errors)


def change(console: Client, server: McpServer, **fields: Any) -> Any:
    form = server_form(name=server.name, prefix=server.prefix, url=server.url, **fields)
    return console.post(f"/admin/mcpgw/mcpserver/{server.pk}/change/", form)


def test_it_registers_a_server_with_its_secret_encrypted(console: Client) -> None:
    response = console.post(
        ADD, server_form(auth_mode="static_header", shared_secret=SHARED_SECRET)
    )

    server = McpServer.objects.get()
    assert response.status_code == 302
    assert SHARED_SECRET not in server.static_secret
    assert server.reveal_static_secret() == SHARED_SECRET


def test_it_never_renders_a_servers_secrets(console: Client) -> None:
    server = McpServerFactory(static_secret=SHARED_SECRET, client_secret=CLIENT_SECRET)

    page = console.get(f"/admin/mcpgw/mcpserver/{server.pk}/change/").content.decode()

    assert SHARED_SECRET not in page
    assert CLIENT_SECRET not in page
    assert server.static_secret not in page
    assert server.oauth_client_secret not in page


def test_it_keeps_the_secret_when_the_field_is_left_empty(console: Client) -> None:
    server = McpServerFactory(auth_mode="static_header", static_secret="keep-me")

    response = change(console, server, auth_mode="static_header", description="changed")

    server.refresh_from_db()
    assert response.status_code == 302
    assert (server.description, server.reveal_static_secret()) == ("changed", "keep-me")


def test_it_replaces_the_secrets(console: Client) -> None:
    server = McpServerFactory(static_secret="old", client_secret="old-client")

    change(console, server, shared_secret="new", client_secret="new-client")

    server.refresh_from_db()
    assert (server.reveal_static_secret(), server.reveal_client_secret()) == (
        "new",
        "new-client",
    )


def test_it_removes_the_secrets_when_asked(console: Client) -> None:
    server = McpServerFactory(static_secret="old", client_secret="old-client")

    change(console, server, clear_shared_secret="on", clear_client_secret="on")

    server.refresh_from_db()
    assert (server.has_static_secret, server.has_client_secret) == (False, False)


def test_it_requires_a_secret_for_a_shared_secret_header(console: Client) -> None:
    response = console.post(ADD, server_form(auth_mode="static_header"))

    assert list(form_errors(response)) == ["shared_secret"]
    assert not McpServer.objects.exists()


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/mcp", "http://10.0.0.5/mcp", "http://127.0.0.1:8080/mcp"],
)
def test_it_refuses_a_server_on_an_internal_address(console: Client, url: str) -> None:
    response = console.post(ADD, server_form(url=url))

    assert "will not connect" in form_errors(response)["url"][0]
    assert not McpServer.objects.exists()


def test_it_accepts_an_internal_address_in_an_allowed_network(
    console: Client, settings: Settings
) -> None:
    settings.MCP_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    ssrf._allowed.cache_clear()

    response = console.post(ADD, server_form(url="http://127.0.0.1:8080/mcp"))

    assert response.status_code == 302
    assert McpServer.objects.get().url == "http://127.0.0.1:8080/mcp"


def test_it_refuses_an_oauth_endpoint_on_an_internal_address(console: Client) -> None:
    form = server_form(auth_mode="per_user_oauth", oauth_issuer="http://10.0.0.5/realms/x")

    response = console.post(ADD, form)

    assert list(form_errors(response)) == ["oauth_issuer"]


def test_it_lets_an_admin_disable_a_server_whose_address_is_no_longer_allowed(
    console: Client,
) -> None:
    server = McpServerFactory(url="http://10.0.0.5/mcp")

    response = change(console, server, enabled="")

    server.refresh_from_db()
    assert response.status_code == 302
    assert server.enabled is False


@pytest.mark.parametrize("prefix", ["GitHub", "a__b", "g" * 33])
def test_it_refuses_a_malformed_prefix(console: Client, prefix: str) -> None:
    response = console.post(ADD, server_form(prefix=prefix))

    assert "prefix" in form_errors(response)


def test_it_lists_credentials_without_their_tokens(console: Client, bob: User) -> None:
    credential = McpCredentialFactory(user=bob, tokens=("access-do-not-show", "refresh-no"))

    listing = console.get("/admin/mcpgw/mcpcredential/").content.decode()
    detail = console.get(f"/admin/mcpgw/mcpcredential/{credential.pk}/change/").content.decode()

    assert bob.username in listing
    assert all(
        secret not in page
        for page in (listing, detail)
        for secret in (
            "access-do-not-show",
            "refresh-no",
            credential.access_token,
            credential.refresh_token,
        )
    )


def test_it_disconnects_a_user_by_deleting_the_credential(console: Client) -> None:
    credential = McpCredentialFactory()

    response = console.post(f"/admin/mcpgw/mcpcredential/{credential.pk}/delete/", {"post": "yes"})

    assert response.status_code == 302
    assert not McpCredential.objects.exists()


def test_it_does_not_edit_a_credential(console: Client) -> None:
    credential = McpCredentialFactory(kind="token")
    form = {"user": credential.user_id, "server": credential.server_id, "kind": "oauth"}

    response = console.post(f"/admin/mcpgw/mcpcredential/{credential.pk}/change/", form)

    credential.refresh_from_db()
    assert response.status_code == 403
    assert credential.kind == "token"


def test_it_filters_the_mcp_log_by_status(console: Client) -> None:
    McpLogFactory(request_id="req-ok", status="ok")
    McpLogFactory(request_id="req-denied", status="denied")

    page = console.get("/admin/audit/mcplog/?status=denied").content.decode()

    assert "req-denied" in page
    assert "req-ok" not in page


def test_it_searches_the_mcp_log_by_tool_name(console: Client) -> None:
    McpLogFactory(request_id="req-issue", name="github__create_issue")
    McpLogFactory(request_id="req-search", name="linear__search")

    page = console.get("/admin/audit/mcplog/?q=linear__search").content.decode()

    assert "req-search" in page
    assert "req-issue" not in page


def test_it_keeps_the_mcp_log_read_only(console: Client) -> None:
    record = McpLogFactory(status="ok")

    response = console.post(f"/admin/audit/mcplog/{record.pk}/change/", {"status": "error"})

    assert response.status_code == 403
    assert McpLog.objects.get().status == "ok"


@pytest.mark.parametrize("page", ["/admin/mcpgw/mcpcredential/add/", "/admin/audit/mcplog/add/"])
def test_it_offers_no_way_to_add_records(console: Client, page: str) -> None:
    assert console.get(page).status_code == 403


@pytest.mark.parametrize(
    "page",
    [
        "/admin/",
        "/admin/mcpgw/mcpserver/",
        ADD,
        "/admin/mcpgw/mcpserver/{server}/change/",
        "/admin/mcpgw/mcpcredential/",
        "/admin/mcpgw/mcpcredential/{credential}/change/",
        "/admin/audit/mcplog/",
        "/admin/audit/mcplog/?status=ok&server=github&method=tools%2Fcall",
        "/admin/audit/mcplog/{record}/change/",
    ],
)
def test_it_renders_every_mcp_console_page(console: Client, page: str) -> None:
    credential = McpCredentialFactory()
    record = McpLogFactory()

    url = page.format(server=credential.server_id, credential=credential.pk, record=record.pk)

    assert console.get(url).status_code == 200


def test_it_keeps_the_mcp_console_from_users_without_console_rights(bob: User) -> None:
    bob.role_assignments.all().delete()
    client = Client()
    client.force_login(bob)

    assert client.get("/admin/mcpgw/mcpserver/").status_code == 302


def test_a_developer_sees_mcp_servers_but_cannot_register_one(bob: User) -> None:
    client = Client()
    client.force_login(bob)

    assert client.get("/admin/mcpgw/mcpserver/").status_code == 200
    assert client.get("/admin/mcpgw/mcpserver/add/").status_code == 403
