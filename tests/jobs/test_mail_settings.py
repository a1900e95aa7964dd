"""Where the worker's mail goes is one URL; a wrong one stops startup without showing it."""

import os
import subprocess
import sys
from pathlib import Path

from django.conf import settings

SHOW = (
    "from django.conf import settings as s; "
    "print(s.EMAIL_BACKEND, s.EMAIL_HOST, s.EMAIL_PORT, s.EMAIL_USE_TLS, s.EMAIL_HOST_USER)"
)


def start(tmp_path: Path, email_url: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "THINKWATCH_DATA_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "thinkwatch.settings",
        "EMAIL_URL": email_url,
    }
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {SHOW}"],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_it_sends_through_the_smtp_server_the_url_names(tmp_path: Path) -> None:
    started = start(tmp_path, "smtp+tls://mailer:hunter2hunter2@mail.example.com:587")

    assert started.stdout.split() == [
        "django.core.mail.backends.smtp.EmailBackend",
        "mail.example.com",
        "587",
        "True",
        "mailer",
    ]


def test_it_refuses_a_url_it_cannot_use_without_echoing_it(tmp_path: Path) -> None:
    started = start(tmp_path, "mailgun://mailer:hunter2hunter2@mail.example.com")

    assert started.returncode != 0
    assert "EMAIL_URL must be smtp://" in started.stderr
    assert "hunter2hunter2" not in started.stderr
