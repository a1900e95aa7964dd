"""`make run`: prepare the data directory and database, then run the gateway, the console
and the worker in the foreground until Ctrl-C (or SIGTERM) stops all three.

    python -m thinkwatch.run                 # all three
    python -m thinkwatch.run --only gateway  # one of them (the benchmark does this)
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


def _prepare(names: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "thinkwatch.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)
    if "console" in names:
        call_command("collectstatic", interactive=False, verbosity=0)


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
    _prepare(names)
    _banner(names)
    commands = _commands()
    children = {
        name: subprocess.Popen(commands[name], start_new_session=True, preexec_fn=_die_with_parent)  # noqa: S603
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

    _stop_all(children, grace=settings.GATEWAY_DRAIN_SECONDS + 10)
    return code


def _stop_all(children: dict[str, subprocess.Popen[bytes]], grace: float) -> None:
    for child in children.values():
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for name, child in children.items():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop in {grace:.0f}s; killing it", file=sys.stderr)
            child.kill()
            child.wait()


if __name__ == "__main__":
    sys.exit(main())
