"""The MCP servers the gateway tests run against, each a real process on a loopback port,
started once per session and stopped with its whole process group:

- `everything_url`: the reference server-everything (npm), legacy era only.
- `time_url`: PyPI's stdio `mcp-server-time`, bridged to Streamable HTTP by supergateway.
- `fixture_base`: the project's own `tests/mcp/fixture_server.py` (paged, tools, modern).
"""

import shlex
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.mcp.upstreams import NODE_BIN, VENV_BIN, FixtureUpstream, UpstreamProcess


@pytest.fixture(scope="session")
def upstream_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mcp-upstreams")


@contextmanager
def running(process: UpstreamProcess) -> Iterator[UpstreamProcess]:
    try:
        yield process.start()
    finally:
        process.stop()


@pytest.fixture(scope="session")
def everything_url(upstream_logs: Path) -> Iterator[str]:
    """server-everything's endpoint: http://127.0.0.1:<port>/mcp (it listens on all interfaces)."""
    port = free_port()
    args = [str(NODE_BIN / "mcp-server-everything"), "streamableHttp"]
    process = UpstreamProcess(
        "server-everything", args, port, upstream_logs, "/mcp", PORT=str(port)
    )
    with running(process):
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="session")
def time_url(upstream_logs: Path) -> Iterator[str]:
    """mcp-server-time behind supergateway: http://127.0.0.1:<port>/mcp. Legacy sessions get
    one child each; every modern request spawns its own (about a second each)."""
    port = free_port()
    command = f"{shlex.quote(str(VENV_BIN / 'mcp-server-time'))} --local-timezone UTC"
    args = [
        str(NODE_BIN / "supergateway"),
        *("--stdio", command, "--outputTransport", "streamableHttp"),
        *("--port", str(port), "--stateful", "--healthEndpoint", "/healthz"),
    ]
    process = UpstreamProcess("supergateway-time", args, port, upstream_logs, "/healthz")
    with running(process):
        yield f"http://127.0.0.1:{port}/mcp"


@pytest.fixture(scope="session")
def fixture_base(upstream_logs: Path) -> Iterator[FixtureUpstream]:
    """The fixture server: `.base` is http://127.0.0.1:<port>; `.paged`, `.tools` and `.modern`
    are its endpoints; `.stats()`, `.calls()` and `.cancelled()` say what they were asked."""
    port = free_port()
    args = [sys.executable, "-m", "tests.mcp.fixture_server", "--port", str(port)]
    process = UpstreamProcess("fixture-server", args, port, upstream_logs, "/stats")
    with running(process):
        yield FixtureUpstream(f"http://127.0.0.1:{port}")


@pytest.fixture
def fixture_upstream(fixture_base: FixtureUpstream) -> FixtureUpstream:
    """The fixture server with its counts at zero."""
    fixture_base.reset()
    return fixture_base
