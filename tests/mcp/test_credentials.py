"""What the gateway sends upstream for each user: shared secrets, personal tokens set in
the console or through the API, OAuth tokens refreshed before they expire (once, however
many calls want them), and a connect link when the user has nothing to send."""

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from pytest_django.fixtures import Settings

from accounts.models import Role, RoleAssignment
from mcpgw import credentials
from mcpgw.credentials import CredentialCache, CredentialMissing, upstream_headers
from mcpgw.models import McpCredential, McpServer
from tests.conftest import free_port
from tests.factories import McpCredentialFactory, McpServerFactory, make_key
from tests.mcp.oauth_helpers import OAuthServer, connect, signed_in
from tests.quotas.test_instances import RedisServer
from thinkwatch.lib import http, redis

pytest_plugins = ["tests.mcp.oauth_fixture"]

# The gateway reads credentials off its event loop, in a thread of its own: what the tests
# write must be committed for it to see.
pytestmark = [pytest.mark.usefixtures("loopback_allowed"), pytest.mark.django_db(transaction=True)]

BOB_TOKEN = "ghp-bob-personal-token-123"
CAROL_TOKEN = "ghp-carol-personal-token-456"


@pytest.fixture
def github(db: None) -> McpServer:
    """Each user reaches it with their own personal access token."""
    return McpServerFactory(name="GitHub", prefix="github", auth_mode="per_user_token")


def api_for(user: User) -> Client:
    """The user's console key, as a management API client."""
    _, key = make_key(user, surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def put_token(user: User, server: McpServer, token: str) -> dict[str, object]:
    response = api_for(user).put(
        f"/api/mcp/connections/{server.pk}", {"token": token}, content_type="application/json"
    )
    assert response.status_code == 200, response.content
    return dict(response.json())


def headers_now(server: McpServer, user_id: int | None) -> dict[str, str]:
    """upstream_headers from sync code, as a gateway process would answer."""
    return async_to_sync(_headers_and_close)(server, user_id)


async def _headers_and_close(server: McpServer, user_id: int | None) -> dict[str, str]:
    try:
        return await upstream_headers(server, user_id)
    finally:
        await http.close()


@pytest.fixture
async def gateway_loop(settings: Settings) -> AsyncIterator[None]:
    """An async test is one gateway process: its HTTP and Redis clients close with it."""
    yield
    await http.close()
    if settings.REDIS_URL:
        await redis.client().aclose()


# --- static and none -------------------------------------------------------------------


def test_it_sends_nothing_to_a_server_without_auth(db: None, bob: User) -> None:
    server = McpServerFactory(auth_mode="none")

    assert headers_now(server, bob.pk) == {}


@pytest.mark.parametrize(
    ("header", "scheme", "expected"),
    [
        ("Authorization", "Bearer", "Bearer shared-secret"),
        ("X-Api-Key", "", "shared-secret"),
    ],
)
def test_it_sends_the_shared_secret(
    db: None, header: str, scheme: str, expected: str, bob: User
) -> None:
    server = McpServerFactory(
        auth_mode="static_header",
        header_name=header,
        header_scheme=scheme,
        static_secret="shared-secret",
    )

    assert headers_now(server, bob.pk) == {header: expected}
    assert headers_now(server, None) == {header: expected}


# --- personal tokens -------------------------------------------------------------------


def test_it_sends_each_user_their_own_token(github: McpServer, bob: User, carol: User) -> None:
    put_token(bob, github, BOB_TOKEN)
    put_token(carol, github, CAROL_TOKEN)

    assert headers_now(github, bob.pk) == {"Authorization": f"Bearer {BOB_TOKEN}"}
    assert headers_now(github, carol.pk) == {"Authorization": f"Bearer {CAROL_TOKEN}"}


def test_it_stores_a_token_pasted_in_the_console(github: McpServer, bob: User) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(bob)
    page = browser.get(f"/mcp/connect/{github.pk}/")

    saved = browser.post(
        f"/mcp/connect/{github.pk}/",
        {"token": f"  {BOB_TOKEN}\n", "csrfmiddlewaretoken": page.context["csrf_token"]},
    )

    assert page.status_code == 200
    assert saved.status_code == 302
    assert headers_now(github, bob.pk) == {"Authorization": f"Bearer {BOB_TOKEN}"}


def test_it_refuses_a_console_form_without_its_csrf_token(github: McpServer, bob: User) -> None:
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(bob)

    refused = browser.post(f"/mcp/connect/{github.pk}/", {"token": BOB_TOKEN})

    assert refused.status_code == 403
    assert not McpCredential.objects.exists()


def test_it_keeps_the_token_column_free_of_plaintext(github: McpServer, bob: User) -> None:
    put_token(bob, github, BOB_TOKEN)

    stored = McpCredential.objects.get(user=bob)
    assert BOB_TOKEN not in str(vars(stored))
    assert stored.reveal_access_token() == BOB_TOKEN


def test_it_never_returns_a_token_from_the_api(github: McpServer, bob: User) -> None:
    saved = put_token(bob, github, BOB_TOKEN)
    listed = api_for(bob).get("/api/mcp/connections")

    assert BOB_TOKEN not in str(saved) + listed.content.decode()
    assert listed.json() == [saved]
    assert set(saved) == {
        "server_id",
        "server_name",
        "kind",
        "scopes",
        "expires_at",
        "connected_at",
        "updated_at",
    }


def test_it_lists_only_the_callers_connections(github: McpServer, bob: User, carol: User) -> None:
    put_token(bob, github, BOB_TOKEN)

    assert api_for(carol).get("/api/mcp/connections").json() == []
    assert api_for(bob).get("/api/mcp/connections").json()[0]["server_name"] == "GitHub"


def test_it_lets_a_user_remove_only_their_own_connection(
    github: McpServer, bob: User, carol: User
) -> None:
    put_token(bob, github, BOB_TOKEN)

    carols = api_for(carol).delete(f"/api/mcp/connections/{github.pk}")
    bobs = api_for(bob).delete(f"/api/mcp/connections/{github.pk}")

    assert carols.status_code == 404
    assert bobs.status_code == 204
    assert not McpCredential.objects.exists()


def test_it_replaces_a_token_at_once(github: McpServer, bob: User) -> None:
    put_token(bob, github, "first-token")
    headers_now(github, bob.pk)

    put_token(bob, github, "second-token")

    assert headers_now(github, bob.pk) == {"Authorization": "Bearer second-token"}
    assert McpCredential.objects.count() == 1


def test_it_forgets_a_removed_connection_at_once(github: McpServer, bob: User) -> None:
    put_token(bob, github, BOB_TOKEN)
    headers_now(github, bob.pk)

    api_for(bob).delete(f"/api/mcp/connections/{github.pk}")

    with pytest.raises(CredentialMissing):
        headers_now(github, bob.pk)


@pytest.mark.parametrize("token", ["Bearer abc", "abc\r\nX-Injected: 1", "", "tøken"])
def test_it_refuses_a_token_that_cannot_be_a_header(
    github: McpServer, bob: User, token: str
) -> None:
    response = api_for(bob).put(
        f"/api/mcp/connections/{github.pk}", {"token": token}, content_type="application/json"
    )

    assert response.status_code == 422
    assert not McpCredential.objects.exists()


def test_it_takes_no_personal_token_for_an_oauth_server(tracker: McpServer, bob: User) -> None:
    response = api_for(bob).put(
        f"/api/mcp/connections/{tracker.pk}", {"token": BOB_TOKEN}, content_type="application/json"
    )

    assert response.status_code == 409


def test_it_has_nothing_to_authorize_for_a_token_server(github: McpServer, bob: User) -> None:
    response = api_for(bob).post(f"/api/mcp/connections/{github.pk}/authorize")

    assert response.status_code == 409


def test_it_has_no_connection_for_a_server_without_per_user_auth(db: None, bob: User) -> None:
    server = McpServerFactory(auth_mode="static_header", static_secret="x")

    assert signed_in(bob).get(f"/mcp/connect/{server.pk}/").status_code == 404
    assert api_for(bob).delete(f"/api/mcp/connections/{server.pk}").status_code == 404


# --- missing credentials ---------------------------------------------------------------


def test_it_says_where_to_connect_when_the_user_has_no_token(
    github: McpServer, bob: User, settings: Settings
) -> None:
    settings.CONSOLE_PUBLIC_URL = "https://console.example.com/"

    with pytest.raises(CredentialMissing) as missing:
        headers_now(github, bob.pk)

    url = f"https://console.example.com/mcp/connect/{github.pk}/"
    assert missing.value.connect_url == url
    assert missing.value.server_id == github.pk
    assert missing.value.server_name == "GitHub"
    assert url in str(missing.value)
    assert signed_in(bob).get(f"/mcp/connect/{github.pk}/").status_code == 200


def test_it_links_to_the_console_port_without_a_public_url(
    github: McpServer, settings: Settings
) -> None:
    settings.CONSOLE_PUBLIC_URL = ""
    settings.BIND_ADDRESS = "10.1.2.3"
    settings.CONSOLE_PORT = 3001

    assert credentials.connect_url(github.pk) == f"http://10.1.2.3:3001/mcp/connect/{github.pk}/"


def test_it_keeps_one_users_token_from_another(github: McpServer, bob: User, carol: User) -> None:
    put_token(bob, github, BOB_TOKEN)

    with pytest.raises(CredentialMissing):
        headers_now(github, carol.pk)


def test_it_refuses_a_per_user_server_to_a_key_without_an_owner(github: McpServer) -> None:
    with pytest.raises(CredentialMissing) as missing:
        headers_now(github, None)

    assert missing.value.reason == "no_user"


# --- the cache -------------------------------------------------------------------------


async def test_it_answers_a_warm_call_from_memory_until_cleared(
    github: McpServer, bob: User, gateway_loop: None
) -> None:
    await sync_to_async(McpCredentialFactory)(user=bob, server=github, tokens=(BOB_TOKEN, ""))
    assert await upstream_headers(github, bob.pk) == {"Authorization": f"Bearer {BOB_TOKEN}"}
    # Behind the cache's back: no signal, so only a read of the database would notice.
    await sync_to_async(McpCredential.objects.filter(user=bob).update)(access_token="")

    warm = await upstream_headers(github, bob.pk)
    credentials.clear()

    assert warm == {"Authorization": f"Bearer {BOB_TOKEN}"}
    with pytest.raises(CredentialMissing):
        await upstream_headers(github, bob.pk)


async def test_it_remembers_a_missing_credential_until_one_is_saved(
    github: McpServer, bob: User, gateway_loop: None
) -> None:
    with pytest.raises(CredentialMissing):
        await upstream_headers(github, bob.pk)

    await sync_to_async(McpCredentialFactory)(user=bob, server=github, tokens=(BOB_TOKEN, ""))

    assert await upstream_headers(github, bob.pk) == {"Authorization": f"Bearer {BOB_TOKEN}"}


# --- OAuth refresh ---------------------------------------------------------------------


def due(user: User, server: McpServer, seconds: float = 30) -> McpCredential:
    """Make the user's token expire within the refresh margin, behind the cache's back."""
    expires_at = timezone.now() + timedelta(seconds=seconds)
    McpCredential.objects.filter(user=user, server=server).update(expires_at=expires_at)
    return McpCredential.objects.get(user=user, server=server)


@pytest.fixture
def bob_connected(tracker: McpServer, bob: User, oauth_server: OAuthServer) -> McpCredential:
    """Bob connected Tracker through the authorization server; his token is due."""
    assert connect(signed_in(bob), tracker).status_code == 200
    oauth_server.reset()
    return due(bob, tracker)


@pytest.fixture
def shared_redis(settings: Settings) -> Iterator[str]:
    """A Redis the gateway processes share (REDIS_URL)."""
    server = RedisServer().start()
    settings.REDIS_URL = server.url
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(params=["alone", "sharing redis"])
def lock(request: pytest.FixtureRequest, settings: Settings) -> str:
    """One gateway process alone (embedded mode), or one of several sharing Redis."""
    settings.REDIS_URL = ""
    if request.param == "sharing redis":
        request.getfixturevalue("shared_redis")
    return str(request.param)


async def test_it_refreshes_a_token_due_to_expire_exactly_once(
    tracker: McpServer,
    bob: User,
    bob_connected: McpCredential,
    oauth_server: OAuthServer,
    lock: str,
    gateway_loop: None,
) -> None:
    answers = await asyncio.gather(*(upstream_headers(tracker, bob.pk) for _ in range(10)))

    refreshed = await sync_to_async(McpCredential.objects.get)(pk=bob_connected.pk)
    new_token = refreshed.reveal_access_token()
    assert len(oauth_server.calls("refresh_token")) == 1
    assert answers == [{"Authorization": f"Bearer {new_token}"}] * 10
    assert new_token != bob_connected.reveal_access_token()
    assert refreshed.reveal_refresh_token() != bob_connected.reveal_refresh_token()
    assert refreshed.expires_at is not None
    assert refreshed.expires_at > timezone.now() + timedelta(minutes=59)


async def test_it_refreshes_at_the_token_endpoint_that_issued_the_token(
    tracker: McpServer,
    bob: User,
    bob_connected: McpCredential,
    oauth_server: OAuthServer,
    gateway_loop: None,
) -> None:
    await upstream_headers(tracker, bob.pk)

    [call] = oauth_server.calls("refresh_token")
    assert call["client_auth"] == "client_secret_basic"
    assert call["client_id"] == tracker.oauth_client_id
    assert call["resource"] == tracker.url


async def test_it_refreshes_once_for_two_gateway_processes_sharing_redis(
    tracker: McpServer,
    bob: User,
    bob_connected: McpCredential,
    oauth_server: OAuthServer,
    shared_redis: str,
    gateway_loop: None,
) -> None:
    first, second = CredentialCache(), CredentialCache()  # each process's own memory

    answers = await asyncio.gather(
        *(cache.token(tracker, bob.pk) for cache in (first, second) for _ in range(5))
    )

    assert len(oauth_server.calls("refresh_token")) == 1
    assert len(set(answers)) == 1


async def test_it_leaves_a_token_that_is_not_due_alone(
    tracker: McpServer,
    bob: User,
    bob_connected: McpCredential,
    oauth_server: OAuthServer,
    gateway_loop: None,
) -> None:
    await sync_to_async(due)(bob, tracker, seconds=600)

    answer = await upstream_headers(tracker, bob.pk)

    assert answer == {"Authorization": f"Bearer {bob_connected.reveal_access_token()}"}
    assert oauth_server.calls("refresh_token") == []


@pytest.fixture
def revoked(tracker: McpServer, bob: User) -> McpCredential:
    """Bob's token is due, and its refresh token is one the authorization server revoked."""
    McpCredentialFactory(
        user=bob,
        server=tracker,
        kind="oauth",
        tokens=("old-access-token", "a-revoked-refresh-token"),
        token_endpoint=f"{tracker.oauth_issuer}/token",
        token_auth_method="client_secret_basic",
    )
    return due(bob, tracker, seconds=10)  # type: ignore[no-any-return]


async def test_it_asks_to_reconnect_when_the_refresh_token_is_refused(
    tracker: McpServer, bob: User, revoked: McpCredential, gateway_loop: None
) -> None:
    with pytest.raises(CredentialMissing) as missing:
        await upstream_headers(tracker, bob.pk)

    assert missing.value.reason == "expired"
    assert missing.value.connect_url.endswith(f"/mcp/connect/{tracker.pk}/")
    assert "Reconnect" in str(missing.value)
    assert not await sync_to_async(McpCredential.objects.filter(pk=revoked.pk).exists)()


async def test_it_keeps_using_a_valid_token_while_the_authorization_server_is_down(
    tracker: McpServer, bob: User, revoked: McpCredential, gateway_loop: None
) -> None:
    down = f"http://127.0.0.1:{free_port()}/token"
    await sync_to_async(McpCredential.objects.filter(pk=revoked.pk).update)(token_endpoint=down)

    answer = await upstream_headers(tracker, bob.pk)

    assert answer == {"Authorization": "Bearer old-access-token"}


async def test_it_says_so_when_an_expired_token_cannot_be_refreshed(
    tracker: McpServer, bob: User, revoked: McpCredential, gateway_loop: None
) -> None:
    down = f"http://127.0.0.1:{free_port()}/token"
    expired = timezone.now() - timedelta(seconds=5)
    await sync_to_async(McpCredential.objects.filter(pk=revoked.pk).update)(
        token_endpoint=down, expires_at=expired
    )

    with pytest.raises(credentials.CredentialUnavailable) as unavailable:
        await upstream_headers(tracker, bob.pk)

    assert "could not be renewed" in str(unavailable.value)
    assert await sync_to_async(McpCredential.objects.filter(pk=revoked.pk).exists)()


async def test_it_refuses_to_refresh_at_a_private_address(
    tracker: McpServer, bob: User, revoked: McpCredential, gateway_loop: None
) -> None:
    expired = timezone.now() - timedelta(seconds=5)
    await sync_to_async(McpCredential.objects.filter(pk=revoked.pk).update)(
        token_endpoint="http://10.9.9.9/token", expires_at=expired
    )

    with pytest.raises(credentials.CredentialUnavailable) as unavailable:
        await upstream_headers(tracker, bob.pk)

    assert "unsafe_url" in str(unavailable.value)


async def test_it_keeps_tokens_out_of_the_logs_when_refreshing(
    tracker: McpServer,
    bob: User,
    bob_connected: McpCredential,
    gateway_loop: None,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)

    await upstream_headers(tracker, bob.pk)

    refreshed = await sync_to_async(McpCredential.objects.get)(pk=bob_connected.pk)
    secrets = [
        bob_connected.reveal_access_token(),
        bob_connected.reveal_refresh_token(),
        refreshed.reveal_access_token(),
        refreshed.reveal_refresh_token(),
    ]
    assert "mcp.credential.refreshed" in caplog.text
    assert [s for s in secrets if s in caplog.text] == []


def test_a_user_without_console_rights_signs_in_to_connect(github: McpServer, bob: User) -> None:
    gateway_only = Role.objects.create(name="MCP only", slug="mcp-only", permissions=["*:use"])
    bob.role_assignments.all().delete()
    RoleAssignment.objects.create(user=bob, role=gateway_only)
    bob.set_password("A-long-enough-password-1")
    bob.save()
    browser = Client()
    connect = f"/mcp/connect/{github.pk}/"

    bounced = browser.get(connect)
    assert bounced.status_code == 302 and bounced["Location"].startswith("/accounts/login/")
    assert (
        browser.post(
            "/admin/login/", {"username": bob.username, "password": "A-long-enough-password-1"}
        ).status_code
        == 200
    )  # the admin refuses accounts without console rights
    signed_in = browser.post(
        f"/accounts/login/?next={connect}",
        {"username": bob.username, "password": "A-long-enough-password-1", "next": connect},
    )
    assert signed_in.status_code == 302 and signed_in["Location"] == connect
    assert browser.get(connect).status_code == 200
    assert browser.get("/admin/").status_code == 302  # still no admin


def test_signing_in_lands_on_the_users_connections(github: McpServer, bob: User) -> None:
    bob.set_password("A-long-enough-password-1")
    bob.save()
    browser = Client()
    landed = browser.post(
        "/accounts/login/", {"username": bob.username, "password": "A-long-enough-password-1"}
    )
    assert landed.status_code == 302 and landed["Location"] == "/mcp/connections/"
    page = browser.get("/mcp/connections/")
    assert page.status_code == 200
    assert github.name.encode() in page.content and b"Not connected" in page.content
    assert f"/mcp/connect/{github.pk}/".encode() in page.content
    assert browser.post("/accounts/logout/").status_code == 302
    assert browser.get("/mcp/connections/").status_code == 302  # signed out
