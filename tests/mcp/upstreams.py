"""Running the MCP tests' upstream servers as real processes on loopback ports."""

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx

NODE_BIN = Path(__file__).parent / "node_modules" / ".bin"
VENV_BIN = Path(sys.executable).parent
PR_SET_PDEATHSIG = 1
T = TypeVar("T")
# Looked up here, not in the forked child, where loading a library could deadlock.
_prctl = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def die_with_parent() -> None:
    """Runs in the child before exec: a pytest killed outright takes its servers with it."""
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


class UpstreamProcess:
    """One server in its own process group, its output in a log file, ready once
    `ready_path` answers over HTTP."""

    def __init__(
        self, name: str, args: list[str], port: int, log_dir: Path, ready_path: str, **env: str
    ) -> None:
        self.name = name
        self.args = args
        self.port = port
        self.ready_url = f"http://127.0.0.1:{port}{ready_path}"
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **env}
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20) -> "UpstreamProcess":
        if shutil.which(self.args[0]) is None:
            raise RuntimeError(f"{self.args[0]} is missing (npm ones: `npm ci --prefix tests/mcp`)")
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.args,
                env=self.env,
                cwd=Path(__file__).parents[2],
                stdin=subprocess.PIPE,  # supergateway exits when its stdin closes
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        deadline = time.monotonic() + timeout
        while not self.answers():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.tail()}"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"{self.name} did not answer within {timeout} s:\n{self.tail()}")
            time.sleep(0.05)
        return self

    def answers(self) -> bool:
        try:
            httpx.get(self.ready_url, timeout=1)
        except httpx.TransportError:
            return False
        return True

    def stop(self) -> None:
        """SIGTERM the whole group (supergateway stops its own children then), SIGKILL if stuck."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        if self.process.stdin:
            self.process.stdin.close()

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass(frozen=True)
class FixtureUpstream:
    """The running `tests.mcp.fixture_server`: its endpoints and what they were asked."""

    base: str

    @property
    def paged(self) -> str:
        return f"{self.base}/paged/mcp"

    @property
    def tools(self) -> str:
        return f"{self.base}/tools/mcp"

    @property
    def modern(self) -> str:
        return f"{self.base}/modern/mcp"

    def stats(self) -> dict[str, Any]:
        """{server: {"methods": {method: n}, "calls": {tool: n}, "cancelled": {tool: n}}}"""
        response = httpx.get(f"{self.base}/stats", timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def calls(self, server: str, tool: str) -> int:
        """How many times `tool` on `server` ("paged", "tools" or "modern") was started."""
        return int(self.stats()[server]["calls"].get(tool, 0))

    def cancelled(self, server: str, tool: str) -> int:
        return int(self.stats()[server]["cancelled"].get(tool, 0))

    def reset(self) -> None:
        httpx.delete(f"{self.base}/stats", timeout=5).raise_for_status()


def eventually(read: Callable[[], T], expected: T, timeout: float = 5) -> T:
    """`read()` once it gives `expected`, or what it gives after `timeout`: for effects that
    land upstream a moment after the client has its answer (a cancellation, say)."""
    deadline = time.monotonic() + timeout
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(0.02)
        value = read()
    return value
