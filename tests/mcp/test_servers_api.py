"""Upstream MCP servers through the management API: `/api/mcp/servers`."""

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings

from mcpgw import ssrf
from mcpgw.models import McpServer
from tests.factories import McpCredentialFactory, McpServerFactory, make_key

# An address the SSRF guard accepts without DNS; nothing ever connects to it in these tests.
PUBLIC_URL = "https://1.1.1.1/mcp"
SHARED_SECRET = "ghp-shared-do-not-show"
CLIENT_SECRET = "oauth-client-do-not-show"


@pytest.fixture(autouse=True)
def _no_allowed_networks(settings: Settings) -> Iterator[None]:
    settings.MCP_ALLOWED_NETWORKS = []
    ssrf._allowed.cache_clear()
    yield
    ssrf._allowed.cache_clear()


@pytest.fixture
def api(alice: User) -> Client:
    """Alice's console key, as a management API client."""
    _, key = make_key(alice, surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def post(api: Client, **fields: Any) -> Any:
    body = {"name": "GitHub", "prefix": "github", "url": PUBLIC_URL, **fields}
    return api.post("/api/mcp/servers", body, content_type="application/json")


def patch(api: Client, server: McpServer, **fields: Any) -> Any:
    return api.patch(f"/api/mcp/servers/{server.pk}", fields, content_type="application/json")


def errors(response: Any) -> dict[str, str]:
    return {e["loc"][-1]: e["msg"] for e in response.json()["detail"]}


def test_it_registers_a_server(api: Client) -> None:
    response = post(api, description="Issues and PRs", timeout_seconds=12.5)

    assert response.status_code == 201
    body = response.json()
    assert {k: body[k] for k in ("name", "prefix", "url", "auth_mode", "timeout_seconds")} == {
        "name": "GitHub",
        "prefix": "github",
        "url": PUBLIC_URL,
        "auth_mode": "none",
        "timeout_seconds": 12.5,
    }
    assert McpServer.objects.get().description == "Issues and PRs"


def test_it_lists_and_gets_servers(api: Client) -> None:
    server = McpServerFactory(prefix="linear")

    listed = api.get("/api/mcp/servers").json()
    got = api.get(f"/api/mcp/servers/{server.pk}").json()

    assert [s["prefix"] for s in listed] == ["linear"]
    assert got["id"] == server.pk


def test_it_stores_the_shared_secret_encrypted_and_never_returns_it(api: Client) -> None:
    created = post(api, auth_mode="static_header", static_secret=SHARED_SECRET)

    server = McpServer.objects.get()
    pages = [
        created,
        api.get("/api/mcp/servers"),
        api.get(f"/api/mcp/servers/{server.pk}"),
        patch(api, server, description="changed"),
    ]
    assert created.json()["has_static_secret"] is True
    assert all(SHARED_SECRET not in page.content.decode() for page in pages)
    assert all(server.static_secret not in page.content.decode() for page in pages)
    assert SHARED_SECRET not in server.static_secret
    assert server.reveal_static_secret() == SHARED_SECRET


def test_it_stores_the_client_secret_encrypted_and_never_returns_it(api: Client) -> None:
    created = post(
        api, auth_mode="per_user_oauth", oauth_client_id="tw", oauth_client_secret=CLIENT_SECRET
    )

    server = McpServer.objects.get()
    pages = [created, api.get("/api/mcp/servers"), api.get(f"/api/mcp/servers/{server.pk}")]
    assert created.json()["has_client_secret"] is True
    assert all(CLIENT_SECRET not in page.content.decode() for page in pages)
    assert CLIENT_SECRET not in server.oauth_client_secret
    assert server.reveal_client_secret() == CLIENT_SECRET


def test_it_keeps_the_secret_columns_free_of_plaintext(api: Client) -> None:
    post(
        api,
        auth_mode="static_header",
        static_secret=SHARED_SECRET,
        oauth_client_secret=CLIENT_SECRET,
    )

    stored = McpServer.objects.values_list("static_secret", "oauth_client_secret").get()

    assert SHARED_SECRET not in stored[0]
    assert CLIENT_SECRET not in stored[1]


def test_it_documents_the_secrets_as_write_only(api: Client) -> None:
    schemas = api.get("/api/openapi.json").json()["components"]["schemas"]

    assert {"static_secret", "oauth_client_secret"} <= set(schemas["McpServerIn"]["properties"])
    assert not {"static_secret", "oauth_client_secret"} & set(schemas["McpServerOut"]["properties"])


def test_it_keeps_the_secret_when_a_patch_leaves_it_out(api: Client) -> None:
    server = McpServerFactory(auth_mode="static_header", static_secret="keep-me")

    response = patch(api, server, header_name="X-Api-Key", header_scheme="")

    server.refresh_from_db()
    assert response.json()["header_name"] == "X-Api-Key"
    assert server.reveal_static_secret() == "keep-me"


def test_it_replaces_the_secret(api: Client) -> None:
    server = McpServerFactory(auth_mode="static_header", static_secret="old")

    patch(api, server, static_secret="new")

    server.refresh_from_db()
    assert server.reveal_static_secret() == "new"


def test_it_removes_the_secret_with_an_empty_string(api: Client) -> None:
    server = McpServerFactory(static_secret="old", client_secret="old-client")

    response = patch(api, server, static_secret="", oauth_client_secret="")

    assert (response.json()["has_static_secret"], response.json()["has_client_secret"]) == (
        False,
        False,
    )


def test_it_requires_a_secret_for_a_shared_secret_header(api: Client) -> None:
    response = post(api, auth_mode="static_header")

    assert response.status_code == 422
    assert "static_secret" in errors(response)


def test_it_refuses_to_remove_the_secret_a_shared_secret_server_needs(api: Client) -> None:
    server = McpServerFactory(auth_mode="static_header", static_secret="needed")

    response = patch(api, server, static_secret="")

    server.refresh_from_db()
    assert response.status_code == 422
    assert server.reveal_static_secret() == "needed"


@pytest.mark.parametrize(
    "url",
    ["http://169.254.169.254/mcp", "http://10.0.0.5/mcp", "http://127.0.0.1:8080/mcp"],
)
def test_it_refuses_a_server_on_an_internal_address(api: Client, url: str) -> None:
    response = post(api, url=url)

    assert response.status_code == 422
    assert "will not connect" in errors(response)["url"]
    assert not McpServer.objects.exists()


def test_it_accepts_an_internal_address_in_an_allowed_network(
    api: Client, settings: Settings
) -> None:
    settings.MCP_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    ssrf._allowed.cache_clear()

    response = post(api, url="http://127.0.0.1:8080/mcp")

    assert response.status_code == 201


def test_it_refuses_a_metadata_address_even_in_an_allowed_network(
    api: Client, settings: Settings
) -> None:
    settings.MCP_ALLOWED_NETWORKS = ["169.254.0.0/16"]
    ssrf._allowed.cache_clear()

    response = post(api, url="http://169.254.169.254/mcp")

    assert "metadata" in errors(response)["url"]


def test_it_checks_where_a_moved_server_points(api: Client) -> None:
    server = McpServerFactory(url=PUBLIC_URL)

    response = patch(api, server, url="http://10.0.0.5/mcp")

    server.refresh_from_db()
    assert response.status_code == 422
    assert server.url == PUBLIC_URL


@pytest.mark.parametrize(
    "field", ["oauth_issuer", "oauth_authorization_endpoint", "oauth_token_endpoint"]
)
def test_it_refuses_an_oauth_endpoint_on_an_internal_address(api: Client, field: str) -> None:
    endpoints = {
        "oauth_issuer": "https://1.0.0.1",
        "oauth_authorization_endpoint": "https://1.0.0.1/authorize",
        "oauth_token_endpoint": "https://1.0.0.1/token",
    }

    response = post(
        api, auth_mode="per_user_oauth", **{**endpoints, field: "http://10.0.0.5/oauth"}
    )

    assert response.status_code == 422
    assert list(errors(response)) == [field]


def test_it_leaves_oauth_endpoints_to_discovery_when_none_are_given(api: Client) -> None:
    response = post(api, auth_mode="per_user_oauth", oauth_client_id="thinkwatch")

    assert response.status_code == 201


def test_it_accepts_an_issuer_without_endpoints(api: Client) -> None:
    response = post(api, auth_mode="per_user_oauth", oauth_issuer="https://1.0.0.1")

    assert response.status_code == 201


def test_it_refuses_one_oauth_endpoint_without_the_other(api: Client) -> None:
    response = post(api, auth_mode="per_user_oauth", oauth_token_endpoint="https://1.0.0.1/t")

    assert response.status_code == 422
    assert list(errors(response)) == ["oauth_authorization_endpoint"]


@pytest.mark.parametrize(
    "prefix", ["GitHub", "a__b", "_github", "github_", "git-hub", "", "g" * 33]
)
def test_it_refuses_a_malformed_prefix(api: Client, prefix: str) -> None:
    response = post(api, prefix=prefix)

    assert response.status_code == 422
    assert "prefix" in errors(response)


def test_it_keeps_prefixes_short_enough_for_64_character_tool_names(
    api: Client, settings: Settings
) -> None:
    settings.MCP_CLIENT_PREFIX = "mcp__" + "x" * 35 + "__"  # 42 characters: 19 left

    response = post(api, prefix="p" * 20)

    assert response.status_code == 422
    assert "At most 19 characters" in errors(response)["prefix"]


@pytest.mark.parametrize(
    "url", ["ftp://1.1.1.1/mcp", "https://user:pw@1.1.1.1/mcp", "https://1.1.1.1/mcp#x"]
)
def test_it_refuses_a_malformed_url(api: Client, url: str) -> None:
    response = post(api, url=url)

    assert response.status_code == 422
    assert "url" in errors(response)


def test_it_reports_every_failing_field_at_once(api: Client) -> None:
    response = post(api, prefix="Bad", url="http://10.0.0.5/mcp", auth_mode="static_header")

    assert set(errors(response)) == {"prefix", "url", "static_secret"}


@pytest.mark.parametrize("field", ["name", "prefix"])
def test_it_refuses_a_duplicate(api: Client, field: str) -> None:
    McpServerFactory(name="GitHub", prefix="github")

    response = post(api, **{field: {"name": "GitHub", "prefix": "github"}[field]})

    assert response.status_code == 422
    assert field in errors(response)


def test_it_renames_a_servers_prefix(api: Client) -> None:
    server = McpServerFactory(prefix="gh")

    response = patch(api, server, prefix="github")

    assert response.status_code == 200
    assert McpServer.objects.get().prefix == "github"


def test_it_disables_a_server(api: Client) -> None:
    server = McpServerFactory()

    assert patch(api, server, enabled=False).json()["enabled"] is False


def test_it_deletes_a_server_with_its_credentials(api: Client) -> None:
    credential = McpCredentialFactory()

    response = api.delete(f"/api/mcp/servers/{credential.server_id}")

    assert response.status_code == 204
    assert not McpServer.objects.exists()


def test_it_answers_404_for_an_unknown_server(api: Client) -> None:
    assert api.get("/api/mcp/servers/999999").status_code == 404


def test_a_developer_key_may_list_servers_but_not_register_one(bob: User) -> None:
    _, key = make_key(bob, surfaces=["console"])
    as_bob = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    assert as_bob.get("/api/mcp/servers").status_code == 200
    response = as_bob.post(
        "/api/mcp/servers",
        {"name": "x", "prefix": "x", "url": "http://127.0.0.1:9/mcp"},
        content_type="application/json",
    )
    assert response.status_code == 403
    assert "mcp_servers:create" in response.json()["detail"]
    assert not McpServer.objects.exists()


def test_it_refuses_a_session_without_console_rights(bob: User) -> None:
    bob.role_assignments.all().delete()
    client = Client()
    client.force_login(bob)

    assert client.get("/api/mcp/servers").status_code == 401


def test_it_refuses_anonymous_callers(db: None) -> None:
    assert Client().post("/api/mcp/servers", {}, content_type="application/json").status_code == 401


def test_it_lets_an_admin_disable_a_server_whose_address_is_no_longer_allowed(
    api: Client,
) -> None:
    server = McpServerFactory(url="http://10.0.0.5/mcp")

    response = patch(api, server, enabled=False)

    assert response.status_code == 200
