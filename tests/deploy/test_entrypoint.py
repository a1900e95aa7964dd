"""deploy/entrypoint.sh, the one command every container and unit runs, for each role, on an
embedded installation of its own."""

import subprocess
from pathlib import Path

import httpx

from tests.deploy.conftest import ENTRYPOINT, REPO, Role, Servers, embedded_env


def test_it_refuses_an_unknown_role(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(ENTRYPOINT), "scheduler"], env=embedded_env(tmp_path), capture_output=True, text=True
    )

    assert done.returncode == 64
    assert "gateway|console|worker|beat|migrate" in done.stderr


def test_it_asks_for_a_role(tmp_path: Path) -> None:
    done = subprocess.run([str(ENTRYPOINT)], env=embedded_env(tmp_path), capture_output=True)

    assert done.returncode == 64


def test_migrate_leaves_no_migration_unapplied(tmp_path: Path) -> None:
    env = embedded_env(tmp_path)

    migrated = subprocess.run([str(ENTRYPOINT), "migrate"], env=env, capture_output=True)
    check = subprocess.run(
        ["python", "manage.py", "migrate", "--check"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )

    assert migrated.returncode == 0
    assert check.returncode == 0, check.stdout


def test_the_gateway_role_serves_the_gateway(servers: Servers) -> None:
    url = f"http://127.0.0.1:{servers.gateway_port}"

    assert httpx.get(f"{url}/health/live").status_code == 200
    assert httpx.post(f"{url}/v1/chat/completions", json={}).status_code == 401


def test_the_console_role_serves_the_console_and_its_static_files(servers: Servers) -> None:
    url = f"http://127.0.0.1:{servers.console_port}"

    assert httpx.get(f"{url}/admin/login/").status_code == 200
    assert httpx.get(f"{url}/static/admin/css/base.css").status_code == 200


def _migrated(data_dir: Path) -> dict[str, str]:
    """Worker and beat refuse to start on a database with migrations pending."""
    env = embedded_env(data_dir)
    subprocess.run([str(ENTRYPOINT), "migrate"], env=env, capture_output=True, check=True)
    return env


def test_the_worker_role_runs_a_worker_without_beat(tmp_path: Path) -> None:
    worker = Role("worker", _migrated(tmp_path), tmp_path / "worker.log")
    try:
        worker.wait_for_output("ready.")
        code = worker.stop()
    finally:
        worker.kill()

    assert code == 0, worker.output()
    assert "concurrency: 2 (prefork)" in worker.output()
    assert "beat: Starting" not in worker.output()


def test_the_beat_role_keeps_its_schedule_in_the_data_directory(tmp_path: Path) -> None:
    beat = Role("beat", _migrated(tmp_path), tmp_path / "beat.log")
    try:
        beat.wait_for_output("beat: Starting...")
        code = beat.stop()
    finally:
        beat.kill()

    assert code == 0, beat.output()
    assert list(tmp_path.glob("celerybeat-schedule*")) != []
