"""The single sign-on tests' OpenID Provider, loaded by their module as a plugin
(`pytest_plugins = ["tests.accounts.oidc_fixture"]`): npm's oidc-provider, run by
tests/mcp/oidc_provider.mjs on a loopback port once per session, and a second one (another
issuer with the same client registration and signing key) to play an impostor."""

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.accounts.openid_provider import (
    CLIENT_ID,
    CLIENT_SECRET,
    REDIRECT_URI,
    OpenIdProvider,
    signing_jwk,
)
from tests.conftest import free_port
from tests.mcp.upstreams import UpstreamProcess

SCRIPT = Path(__file__).parents[1] / "mcp" / "oidc_provider.mjs"


def _start(port: int, key_file: Path, logs: Path, name: str) -> UpstreamProcess:
    node = shutil.which("node")
    assert node, "node is not installed"
    return UpstreamProcess(
        name,
        [node, str(SCRIPT), str(port), str(key_file)],
        port,
        logs,
        "/.well-known/openid-configuration",
        OP_CLIENT_ID=CLIENT_ID,
        OP_CLIENT_SECRET=CLIENT_SECRET,
        OP_REDIRECT_URI=REDIRECT_URI,
    ).start()


@pytest.fixture(scope="session")
def op_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("oidc-provider") / "signing-key.json"
    path.write_text(json.dumps(signing_jwk()))
    return path


@pytest.fixture(scope="session")
def op(op_key_file: Path) -> Iterator[OpenIdProvider]:
    """The company's identity provider."""
    port = free_port()
    process = _start(port, op_key_file, op_key_file.parent, "oidc-provider")
    try:
        yield OpenIdProvider(f"http://127.0.0.1:{port}")
    finally:
        process.stop()


@pytest.fixture(scope="session")
def impostor(op_key_file: Path) -> Iterator[OpenIdProvider]:
    """Another provider: same client registration, same signing key, its own issuer."""
    port = free_port()
    process = _start(port, op_key_file, op_key_file.parent, "oidc-impostor")
    try:
        yield OpenIdProvider(f"http://127.0.0.1:{port}")
    finally:
        process.stop()
