"""Running ThinkWatch's real processes (python -m thinkwatch.run) from a test."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx
from django.conf import settings
from django.db import connection

from tests.conftest import database_url, free_port


class Processes:
    def __init__(self, data_dir: Path, *only: str, shared_db: bool = True, **env: str) -> None:
        self.gateway_port, self.console_port = free_port(), free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = data_dir / "run.log"
        self.env = {
            **os.environ,
            "THINKWATCH_DATA_DIR": str(data_dir),
            "THINKWATCH_GATEWAY_PORT": str(self.gateway_port),
            "THINKWATCH_CONSOLE_PORT": str(self.console_port),
            "THINKWATCH_DRAIN_SECONDS": "5",
            **env,
        }
        if shared_db:
            # Same database and master key as the test, so both see the same keys and secrets.
            self.env["DATABASE_URL"] = database_url(connection)
            self.env["THINKWATCH_MASTER_KEY"] = settings.MASTER_KEY.hex()
        self.args = [arg for name in only for arg in ("--only", name)]
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def gateway(self) -> str:
        return f"http://127.0.0.1:{self.gateway_port}"

    @property
    def console(self) -> str:
        return f"http://127.0.0.1:{self.console_port}"

    def start(self, *wait_for: str) -> "Processes":
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "thinkwatch.run", *self.args],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=settings.BASE_DIR,
            start_new_session=True,  # its own process group: `kill` reaches the children
        )
        deadline = time.monotonic() + 60
        waiting = list(wait_for)
        while waiting and time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            try:
                if httpx.get(f"{waiting[0]}/health/live", timeout=1).status_code == 200:
                    waiting.pop(0)
            except httpx.TransportError:
                time.sleep(0.1)
        assert not waiting, f"{waiting} not up after 60 s:\n{self.output()}"
        return self

    def start_gateway(self) -> "Processes":
        return self.start(self.gateway)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 30) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        if self._log:
            self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL the supervisor and every process it started, as the OOM killer or a
        node failure would: nothing runs its shutdown code."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        if self._log:
            self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        """Stop whatever still runs, waiting for the children (they write on the way out)."""
        if self.process and self.process.poll() is None:
            try:
                self.stop(signal.SIGTERM, timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
