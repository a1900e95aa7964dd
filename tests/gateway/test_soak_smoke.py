"""The soak (bench/soak.py, `make soak`) for twenty seconds, so that the script cannot rot:
every kind of traffic is sent, every injected failure is answered as it should be, nothing
else fails, and every AI request leaves its log record."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings


@pytest.mark.timeout(240)
def test_the_soak_runs_clean_for_twenty_seconds(tmp_path: Path) -> None:
    args = ["--duration", "20", "--rate", "20", "--sample", "1", "--json"]

    finished = subprocess.run(
        [sys.executable, "bench/soak.py", *args, "--data-dir", str(tmp_path / "soak")],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )

    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    result = json.loads(finished.stdout.splitlines()[-1])
    assert set(result["requests"]) == {
        "chat",
        "flaky",
        "stream",
        "stream_cut",
        "upstream_500",
        "upstream_503",
        "upstream_drop",
        "mcp_session",
        "mcp_call",
    }
    # A flaky provider's failures are mostly retried into successes: "flaky" may be missing.
    assert set(result["expected_errors"]) - {"flaky"} == {
        "stream_cut",
        "upstream_500",
        "upstream_503",
        "upstream_drop",
        "mcp_tool_error",
    }
    assert set(result["flaky_injected"]) == {"500", "503", "drop"}
    assert result["unexpected_errors"] == {}
    assert result["gateway_exit_code"] == 0
    assert result["records"]["gateway"] == result["records"]["gateway_expected"] > 0
    assert result["rss_mb"]["samples"] >= 15
