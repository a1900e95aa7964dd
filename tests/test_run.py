"""`make run`: the three processes on the embedded default, stopped by Ctrl-C."""

import signal
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.processes import Processes


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Processes]:
    """A fresh embedded installation: empty data directory, no DATABASE_URL or REDIS_URL."""
    data_dir = tmp_path_factory.mktemp("embedded")
    processes = Processes(data_dir, shared_db=False, DATABASE_URL="", REDIS_URL="")
    processes.start(processes.gateway, processes.console)
    yield processes
    processes.close()


def test_it_serves_the_gateway(running: Processes) -> None:
    response = httpx.post(f"{running.gateway}/v1/chat/completions", json={})

    assert response.status_code == 401


def test_it_serves_the_console(running: Processes) -> None:
    response = httpx.get(f"{running.console}/admin/login/")

    assert response.status_code == 200
    assert httpx.get(f"{running.console}/static/admin/css/base.css").status_code == 200


def test_it_keeps_its_secrets_private(running: Processes) -> None:
    data_dir = Path(running.env["THINKWATCH_DATA_DIR"])

    modes = {
        name: stat.S_IMODE((data_dir / name).stat().st_mode)
        for name in ("secret_key", "master.key")
    }

    assert modes == {"secret_key": 0o600, "master.key": 0o600}


def test_it_tells_how_to_create_the_first_admin(running: Processes) -> None:
    assert "manage.py setup" in running.output()


def test_it_stops_everything_on_ctrl_c(running: Processes) -> None:
    code = running.stop(signal.SIGINT)

    assert code == 0
    assert "gateway.stopped" in running.output()
    assert "Warm shutdown" in running.output()  # the Celery worker stopped cleanly
