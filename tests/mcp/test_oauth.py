"""Connecting a user's account to an upstream MCP server through OAuth (authorization code
with PKCE), against a real authorization server on loopback."""

import logging
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from mcpgw import oauth
from mcpgw.models import McpCredential, McpOAuthState, McpServer
from tests.factories import McpServerFactory, make_key
from tests.mcp.oauth_helpers import (
    CLIENT_ID,
    CLIENT_SECRET,
    MCP_URL,
    MetadataServer,
    OAuthServer,
    connect,
    signed_in,
    start,
    through_the_authorization_server,
)

pytest_plugins = ["tests.mcp.oauth_fixture"]

pytestmark = pytest.mark.usefixtures("loopback_allowed")


def query_of(url: str) -> dict[str, str]:
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def test_it_connects_through_the_authorization_server(tracker: McpServer, bob: User) -> None:
    page = connect(signed_in(bob), tracker)

    credential = McpCredential.objects.get(user=bob, server=tracker)
    assert page.status_code == 200
    assert b"Your account is connected to Tracker" in page.content
    assert credential.kind == "oauth"
    assert credential.reveal_access_token().count(".") == 2  # the server's JWT
    assert credential.reveal_refresh_token()
    assert credential.token_endpoint == f"{tracker.oauth_issuer}/token"


def test_it_stores_the_tokens_encrypted(tracker: McpServer, bob: User) -> None:
    connect(signed_in(bob), tracker)

    credential = McpCredential.objects.get(user=bob, server=tracker)
    stored = credential.access_token + credential.refresh_token
    assert credential.reveal_access_token() not in stored
    assert credential.reveal_refresh_token() not in stored
    assert stored.count("tw1.") == 2


def test_it_records_when_the_token_expires(tracker: McpServer, bob: User) -> None:
    connect(signed_in(bob), tracker)

    expires_at = McpCredential.objects.get(user=bob, server=tracker).expires_at
    assert expires_at is not None
    assert timedelta(minutes=59) < expires_at - timezone.now() <= timedelta(hours=1)


def test_it_asks_with_pkce_s256_the_resource_and_the_scopes(tracker: McpServer, bob: User) -> None:
    params = query_of(start(signed_in(bob), tracker))

    assert params["code_challenge_method"] == "S256"
    assert len(params["code_challenge"]) == 43
    assert params["resource"] == MCP_URL
    assert params["scope"] == "issues:read issues:write"
    assert params["client_id"] == CLIENT_ID
    assert params["redirect_uri"] == "http://testserver/mcp/oauth/callback"
    assert CLIENT_SECRET not in str(params)


def test_it_redeems_the_code_with_the_verifier_and_client_credentials(
    tracker: McpServer, bob: User, oauth_server: OAuthServer
) -> None:
    connect(signed_in(bob), tracker)

    [call] = oauth_server.calls("authorization_code")
    assert call["code_verifier"] is True
    assert call["client_auth"] == "client_secret_basic"
    assert call["client_id"] == CLIENT_ID
    assert call["resource"] == MCP_URL
    assert call["redirect_uri"] == "http://testserver/mcp/oauth/callback"


def test_it_refuses_a_state_used_twice(tracker: McpServer, bob: User) -> None:
    browser = signed_in(bob)
    back = connect(browser, tracker)
    McpCredential.objects.all().delete()

    again = browser.get(back.request["PATH_INFO"] + "?" + back.request["QUERY_STRING"])

    assert again.status_code == 400
    assert b"already finished" in again.content
    assert not McpCredential.objects.exists()


def test_it_refuses_a_state_another_user_started(
    tracker: McpServer, bob: User, carol: User
) -> None:
    authorize_url = start(signed_in(bob), tracker)

    page = through_the_authorization_server(signed_in(carol), authorize_url)

    assert page.status_code == 400
    assert not McpCredential.objects.exists()
    assert McpOAuthState.objects.filter(user=bob).count() == 1  # still Bob's to finish


def test_it_refuses_a_state_older_than_ten_minutes(tracker: McpServer, bob: User) -> None:
    browser = signed_in(bob)
    authorize_url = start(browser, tracker)

    with time_machine.travel(timezone.now() + timedelta(minutes=11)):
        page = through_the_authorization_server(browser, authorize_url)

    assert page.status_code == 400
    assert b"longer than ten minutes" in page.content
    assert not McpCredential.objects.exists()


def test_it_shows_the_authorization_servers_refusal_escaped(tracker: McpServer, bob: User) -> None:
    browser = signed_in(bob)
    state = query_of(start(browser, tracker))["state"]

    page = browser.get(
        "/mcp/oauth/callback",
        {"state": state, "error": "access_denied", "error_description": "<b>no</b> way"},
    )

    assert page.status_code == 400
    assert b"access_denied: &lt;b&gt;no&lt;/b&gt; way" in page.content
    assert not McpOAuthState.objects.filter(state=state).exists()


def test_it_requires_a_console_sign_in(tracker: McpServer) -> None:
    page = Client().get(f"/mcp/connect/{tracker.pk}/")

    assert page.status_code == 302
    assert page["Location"].startswith("/accounts/login/")


def test_it_starts_over_from_the_connect_page_when_connected(tracker: McpServer, bob: User) -> None:
    browser = signed_in(bob)
    connect(browser, tracker)

    page = browser.get(f"/mcp/connect/{tracker.pk}/")
    reconnect = browser.post(f"/mcp/connect/{tracker.pk}/")

    assert page.status_code == 200
    assert b"Reconnect" in page.content and b"Remove this connection" in page.content
    assert reconnect.status_code == 302
    assert reconnect["Location"].startswith(f"{tracker.oauth_issuer}/authorize?")


def test_it_removes_the_connection(tracker: McpServer, bob: User) -> None:
    browser = signed_in(bob)
    connect(browser, tracker)

    page = browser.post(f"/mcp/connect/{tracker.pk}/remove")

    assert page.status_code == 200
    assert b"Connection removed" in page.content
    assert not McpCredential.objects.filter(user=bob).exists()


def test_it_authorizes_through_the_api_for_a_non_staff_user(tracker: McpServer, bob: User) -> None:
    _, key = make_key(bob, surfaces=["console"])
    api = Client(HTTP_AUTHORIZATION=f"Bearer {key}")

    started = api.post(f"/api/mcp/connections/{tracker.pk}/authorize")
    page = through_the_authorization_server(signed_in(bob), started.json()["authorize_url"])

    assert started.status_code == 200
    assert page.status_code == 200
    assert McpCredential.objects.filter(user=bob, server=tracker).exists()


# --- discovery -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"]
)
def test_it_finds_the_authorization_server_in_protected_resource_metadata(
    metadata_server: MetadataServer, oauth_server: OAuthServer, bob: User, where: str
) -> None:
    server = McpServerFactory(
        url=f"{metadata_server.url}/mcp",
        auth_mode="per_user_oauth",
        oauth_client_id=CLIENT_ID,
    )
    metadata_server.documents[where] = {
        "resource": server.url,
        "authorization_servers": [oauth_server.issuer],
    }

    page = connect(signed_in(bob), server)

    assert page.status_code == 200, page.content
    assert where in metadata_server.requested
    assert oauth_server.calls("authorization_code")[0]["client_auth"] == "none"


def test_it_uses_client_secret_post_when_the_server_offers_only_that(
    metadata_server: MetadataServer, oauth_server: OAuthServer, bob: User
) -> None:
    metadata_server.documents["/.well-known/oauth-authorization-server"] = {
        "issuer": metadata_server.url,
        "authorization_endpoint": f"{oauth_server.issuer}/authorize",
        "token_endpoint": oauth_server.token_endpoint,
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
        "code_challenge_methods_supported": ["S256"],
    }
    server = McpServerFactory(
        auth_mode="per_user_oauth",
        oauth_issuer=metadata_server.url,
        oauth_client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
    )

    connect(signed_in(bob), server)

    assert oauth_server.calls("authorization_code")[0]["client_auth"] == "client_secret_post"
    assert McpCredential.objects.get(server=server).token_auth_method == "client_secret_post"


def test_it_refuses_an_authorization_server_without_s256(
    metadata_server: MetadataServer, oauth_server: OAuthServer, bob: User
) -> None:
    metadata_server.documents["/.well-known/oauth-authorization-server"] = {
        "issuer": metadata_server.url,
        "authorization_endpoint": f"{oauth_server.issuer}/authorize",
        "token_endpoint": oauth_server.token_endpoint,
        "code_challenge_methods_supported": ["plain"],
    }
    server = McpServerFactory(
        auth_mode="per_user_oauth", oauth_issuer=metadata_server.url, oauth_client_id=CLIENT_ID
    )

    page = signed_in(bob).get(f"/mcp/connect/{server.pk}/")

    assert page.status_code == 502
    assert b"PKCE with S256" in page.content


# --- SSRF ------------------------------------------------------------------------------


def test_it_refuses_to_discover_metadata_on_a_private_address(db: None, bob: User) -> None:
    server = McpServerFactory(
        url="http://10.20.30.40/mcp", auth_mode="per_user_oauth", oauth_client_id=CLIENT_ID
    )

    page = signed_in(bob).get(f"/mcp/connect/{server.pk}/")

    assert page.status_code == 502
    assert b"Refused to contact http://10.20.30.40/.well-known/" in page.content
    assert not McpOAuthState.objects.exists()


def test_it_refuses_an_authorization_server_on_a_private_address(
    metadata_server: MetadataServer, bob: User
) -> None:
    server = McpServerFactory(
        url=f"{metadata_server.url}/mcp", auth_mode="per_user_oauth", oauth_client_id=CLIENT_ID
    )
    metadata_server.documents["/.well-known/oauth-protected-resource/mcp"] = {
        "resource": server.url,
        "authorization_servers": ["http://192.168.7.7/"],
    }

    with pytest.raises(oauth.OAuthError) as refused:
        oauth.start(bob, server, "http://testserver/mcp/oauth/callback")

    assert refused.value.error == "unsafe_url"
    assert "192.168.7.7" in str(refused.value)
    assert not McpOAuthState.objects.exists()


def test_it_refuses_to_redeem_a_code_at_a_metadata_address(db: None, bob: User) -> None:
    server = McpServerFactory(
        auth_mode="per_user_oauth",
        oauth_authorization_endpoint="https://login.example.com/authorize",
        oauth_token_endpoint="http://169.254.169.254/token",
        oauth_client_id=CLIENT_ID,
    )
    state = query_of(oauth.start(bob, server, "http://x/cb"))["state"]

    with pytest.raises(oauth.OAuthError) as refused:
        oauth.complete(bob, state, "a-code")

    assert refused.value.error == "unsafe_url"


# --- secrecy ---------------------------------------------------------------------------


def test_it_keeps_tokens_out_of_the_logs(
    tracker: McpServer, bob: User, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)

    connect(signed_in(bob), tracker)

    credential = McpCredential.objects.get(user=bob)
    assert caplog.records  # the HTTP clients did log, at debug level
    assert credential.reveal_access_token() not in caplog.text
    assert credential.reveal_refresh_token() not in caplog.text
    assert CLIENT_SECRET not in caplog.text


def test_it_lists_an_oauth_connection_without_its_tokens(tracker: McpServer, bob: User) -> None:
    browser = signed_in(bob)
    connect(browser, tracker)

    listed = browser.get("/api/mcp/connections")

    credential = McpCredential.objects.get(user=bob)
    assert listed.json()[0]["kind"] == "oauth"
    assert listed.json()[0]["expires_at"] is not None
    assert credential.reveal_access_token() not in listed.content.decode()
    assert credential.reveal_refresh_token() not in listed.content.decode()
