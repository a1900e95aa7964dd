"""The fixtures of the credential tests, loaded by their modules as a plugin
(`pytest_plugins = ["tests.mcp.oauth_fixture"]`): a real OAuth authorization server (npm's
oauth2-mock-server, run by tests/mcp/oauth_server.mjs on a loopback port, once per session),
a metadata server on loopback serving what a test gives it, the SSRF allowance for loopback,
an MCP server connected through the authorization server, and Carol."""

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from pytest_django.fixtures import Settings

from mcpgw import credentials, ssrf
from mcpgw.models import McpServer
from tests.conftest import free_port
from tests.factories import McpServerFactory, UserFactory
from tests.mcp.oauth_helpers import CLIENT_ID, CLIENT_SECRET, MCP_URL, MetadataServer, OAuthServer
from tests.mcp.upstreams import UpstreamProcess


@pytest.fixture(scope="session")
def oauth_server_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OAuthServer]:
    node = shutil.which("node")
    assert node, "node is not installed"
    port = free_port()
    script = str(Path(__file__).with_name("oauth_server.mjs"))
    process = UpstreamProcess(
        "oauth2-mock-server",
        [node, script, str(port)],
        port,
        tmp_path_factory.mktemp("oauth-server"),
        "/.well-known/openid-configuration",
    )
    process.start()
    try:
        yield OAuthServer(f"http://127.0.0.1:{port}")
    finally:
        process.stop()


@pytest.fixture
def oauth_server(oauth_server_process: OAuthServer) -> OAuthServer:
    """The authorization server, with no calls recorded yet."""
    oauth_server_process.reset()
    return oauth_server_process


@pytest.fixture
def metadata_server() -> Iterator[MetadataServer]:
    with MetadataServer() as server:
        yield server


@pytest.fixture
def loopback_allowed(settings: Settings) -> Iterator[None]:
    """The test's servers live on loopback, which the SSRF guard refuses unless allowed."""
    settings.MCP_ALLOWED_NETWORKS = ["127.0.0.0/8"]
    ssrf._allowed.cache_clear()
    yield
    ssrf._allowed.cache_clear()


@pytest.fixture(autouse=True)
def _fresh_credential_cache() -> Iterator[None]:
    """Ids repeat across tests: nothing a previous test cached may answer for this one."""
    credentials.clear()
    yield
    credentials.clear()


@pytest.fixture
def carol(db: None) -> User:
    """Carol is another developer: Bob's connections are none of her business."""
    return UserFactory(username="carol@example.com")


@pytest.fixture
def tracker(db: None, oauth_server: OAuthServer) -> McpServer:
    """An MCP server whose users connect through the authorization server (its issuer is
    configured, so only the authorization server's metadata is discovered)."""
    return McpServerFactory(
        name="Tracker",
        prefix="tracker",
        url=MCP_URL,
        auth_mode="per_user_oauth",
        oauth_issuer=oauth_server.issuer,
        oauth_client_id=CLIENT_ID,
        oauth_scopes="issues:read issues:write",
        client_secret=CLIENT_SECRET,
    )
