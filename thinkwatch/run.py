"""`make run`: prepare the data directory and database, check that everything this
configuration names is there (thinkwatch/startup.py), then run the gateway, the console
and the worker in the foreground until Ctrl-C (or SIGTERM) stops all three.

    python -m thinkwatch.run                 # all three
    python -m thinkwatch.run --only gateway  # one of them (the benchmark does this)

It exits 1 with one line naming the problem when the checks fail, and with the first
non-zero exit code of a process that stopped badly; 0 when every process stopped cleanly.
"""

import argparse
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from django.core.exceptions import ImproperlyConfigured

from thinkwatch.startup import NotReady

PROCESSES = ("gateway", "console", "worker")


def _commands() -> dict[str, list[str]]:
    from django.conf import settings as s

    python = sys.executable
    return {
        "gateway": [
            python,
            "-m",
            "uvicorn",
            "thinkwatch.asgi:gateway",
            "--host",
            s.BIND_ADDRESS,
            "--port",
            str(s.GATEWAY_PORT),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--lifespan",
            "on",
            "--no-access-log",
            "--no-proxy-headers",
            "--no-server-header",
            "--timeout-graceful-shutdown",
            str(s.GATEWAY_DRAIN_SECONDS),
            "--timeout-keep-alive",
            "75",
        ],
        "console": [
            python,
            "-m",
            "daphne",
            "-b",
            s.BIND_ADDRESS,
            "-p",
            str(s.CONSOLE_PORT),
            "thinkwatch.asgi:console",
        ],
        "worker": [
            python,
            "-m",
            "celery",
            "-A",
            "thinkwatch",
            "worker",
            "--beat",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--schedule",
            s.CELERY_BEAT_SCHEDULE_FILENAME,
        ],
    }


def _die_with_parent() -> None:
    """Children get SIGTERM if this supervisor dies without cleaning up (Linux)."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _gateway_child() -> None:
    # uvicorn handles SIGTERM itself (drain, then the lifespan's shutdown) and afterwards
    # raises the signal again under the disposition it found at start. Found ignored, that
    # leaves exit code 0 for a completed graceful shutdown instead of death by SIGTERM
    # (143), so a non-zero code means the drain or the shutdown failed.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent()


def _prepare(names: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinkwatch.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from thinkwatch import startup

    unreachable = startup.database_problem(migrated=False)
    if unreachable:
        raise NotReady(unreachable)
    call_command("migrate", interactive=False, verbosity=0)
    if "console" in names:
        call_command("collectstatic", interactive=False, verbosity=0)
    startup.require()


def _release_database() -> None:
    """The supervisor needs no connection while its processes run (nor a pool's)."""
    from django.db import connections

    for connection in connections.all(initialized_only=True):
        connection.close()
        close_pool = getattr(connection, "close_pool", None)
        if close_pool is not None:
            close_pool()


def _banner(names: list[str]) -> None:
    from django.conf import settings as s

    from accounts.logic import admin_exists

    host = s.BIND_ADDRESS
    lines = [f"ThinkWatch: data in {s.DATA_DIR}"]
    if "gateway" in names:
        lines.append(f"  gateway  http://{host}:{s.GATEWAY_PORT}/v1  (AI clients)")
    if "console" in names:
        lines.append(f"  console  http://{host}:{s.CONSOLE_PORT}/    (admins; API at /api/)")
    if "worker" in names:
        lines.append("  worker   Celery worker + beat")
    if not admin_exists():
        lines += [
            "",
            "No admin account exists yet. Create one with the setup wizard:",
            "  .venv/bin/python manage.py setup",
            "(non-interactive: manage.py setup --no-input ...; see manage.py setup --help)",
        ]
    lines.append("Press Ctrl-C to stop.")
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=PROCESSES, action="append", help="run only this process")
    args = parser.parse_args(argv)
    names = args.only or list(PROCESSES)
    try:
        _prepare(names)
    except (ImproperlyConfigured, NotReady) as exc:
        print(f"ThinkWatch cannot start: {exc}", file=sys.stderr, flush=True)
        return 1
    _banner(names)
    _release_database()
    commands = _commands()
    children = {
        name: subprocess.Popen(  # noqa: S603
            commands[name],
            start_new_session=True,
            preexec_fn=_gateway_child if name == "gateway" else _die_with_parent,
        )
        for name in names
    }
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    code = 0
    while not stopping:
        for name, child in children.items():
            if child.poll() is not None:
                print(
                    f"{name} exited with code {child.returncode}; stopping the others",
                    file=sys.stderr,
                )
                code = child.returncode or 1
                stopping = True
        time.sleep(0.2)
    from django.conf import settings

    stopped = _stop_all(children, grace=settings.GATEWAY_DRAIN_SECONDS + 10)
    return code or stopped


def _stop_all(children: dict[str, subprocess.Popen[bytes]], grace: float) -> int:
    """SIGTERM to every process still running; 0 if each then exited with 0."""
    running = {name: child for name, child in children.items() if child.poll() is None}
    for child in running.values():
        child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    code = 0
    for name, child in running.items():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in {grace:.0f}s; killing it", file=sys.stderr)
            child.kill()
            child.wait()
        if child.returncode != 0:
            print(f"{name} stopped with code {child.returncode}", file=sys.stderr, flush=True)
            code = code or 1
    return code


if __name__ == "__main__":
    sys.exit(main())
