import io
import json

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from accounts.models import ApiKey, hash_key
from providers.models import Provider

STRONG = "Correct-Horse-9-battery"


def setup(*args: str) -> dict:  # type: ignore[type-arg]
    out = io.StringIO()
    call_command("setup", "--no-input", "--json", *args, stdout=out)
    return json.loads(out.getvalue())


@pytest.mark.django_db
def test_it_creates_the_admin_provider_and_key() -> None:
    result = setup(
        "--admin-email",
        "alice@example.com",
        "--admin-password",
        STRONG,
        "--site-name",
        "Acme AI",
        "--provider-type",
        "openai",
        "--provider-name",
        "OpenAI",
        "--provider-api-key",
        "sk-live-1",
        "--issue-key",
        "alice",
    )

    admin = User.objects.get()
    assert (admin.email, admin.is_superuser) == ("alice@example.com", True)
    assert result["site_name"] == "Acme AI"
    assert Provider.objects.get().reveal_secret() == "sk-live-1"
    key = ApiKey.objects.get(key_hash=hash_key(result["api_key"]))
    assert sorted(key.surfaces) == ["ai_gateway", "console", "mcp_gateway"]
    assert key.owner == admin


@pytest.mark.django_db
def test_it_prints_the_plaintext_key_only_under_api_key() -> None:
    result = setup(
        "--admin-email", "alice@example.com", "--admin-password", STRONG, "--issue-key", "alice"
    )

    others = json.dumps({k: v for k, v in result.items() if k != "api_key"})
    assert result["api_key"].startswith("tw-")
    assert result["api_key"] not in others
    assert result["key"]["prefix"] == result["api_key"][:11]


@pytest.mark.django_db
def test_it_never_prints_the_provider_secret() -> None:
    out = io.StringIO()
    call_command(
        "setup",
        "--no-input",
        "--admin-email",
        "alice@example.com",
        "--admin-password",
        STRONG,
        "--provider-type",
        "openai",
        "--provider-name",
        "OpenAI",
        "--provider-api-key",
        "sk-live-secret",
        stdout=out,
    )

    assert "sk-live-secret" not in out.getvalue()


@pytest.mark.django_db
def test_it_refuses_to_run_once_an_admin_exists() -> None:
    setup("--admin-email", "alice@example.com", "--admin-password", STRONG)

    with pytest.raises(CommandError, match="already set up"):
        setup("--admin-email", "mallory@example.com", "--admin-password", STRONG)
    assert User.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("password", ["short1A!", "alllowercaseletters", "123456789012345"])
def test_it_rejects_a_weak_password(password: str) -> None:
    with pytest.raises(CommandError, match="admin_password"):
        setup("--admin-email", "alice@example.com", "--admin-password", password)
    assert not User.objects.exists()


@pytest.mark.django_db
def test_it_rejects_a_compatible_provider_without_a_base_url() -> None:
    with pytest.raises(CommandError, match="base_url"):
        setup(
            "--admin-email",
            "alice@example.com",
            "--admin-password",
            STRONG,
            "--provider-type",
            "openai_compatible",
            "--provider-name",
            "vllm",
        )
    assert not User.objects.exists()


def test_it_exits_non_zero_when_run_again(tmp_path, transactional_db) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    from django.db import connection

    from tests.conftest import database_url

    env = {
        **os.environ,
        "THINKWATCH_ADMIN_PASSWORD": STRONG,
        "DATABASE_URL": database_url(connection),
    }
    command = [
        sys.executable,
        "manage.py",
        "setup",
        "--no-input",
        "--admin-email",
        "alice@example.com",
    ]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)

    assert first.returncode == 0, first.stderr
    assert again.returncode != 0
    assert "already set up" in again.stderr


def test_it_asks_its_questions_on_a_terminal(transactional_db) -> None:  # type: ignore[no-untyped-def]
    import os
    import pty
    import sys

    from django.db import connection

    from tests.conftest import database_url

    answers = [
        b"carol@example.com\n",  # admin email
        STRONG.encode() + b"\n",  # password
        STRONG.encode() + b"\n",  # again
        b"Carol Corp\n",  # site name
        b"n\n",  # no provider
        b"y\n",  # issue a key
        b"carol laptop\n",
    ]
    pid, fd = pty.fork()
    if pid == 0:  # the child: the wizard on a terminal
        os.environ["DATABASE_URL"] = database_url(connection)
        os.execv(sys.executable, [sys.executable, "manage.py", "setup"])  # noqa: S606
    output = _converse(fd, answers)
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0, output
    assert User.objects.get().email == "carol@example.com"
    assert ApiKey.objects.get().name == "carol laptop"
    assert STRONG not in output  # the password is not echoed


def _converse(fd: int, answers: list[bytes]) -> str:
    import os
    import select

    output = b""
    pending = list(answers)
    while True:
        ready, _, _ = select.select([fd], [], [], 30)
        assert ready, f"the wizard stopped talking:\n{output.decode(errors='replace')}"
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # the child closed the terminal
            return output.decode(errors="replace")
        if not chunk:
            return output.decode(errors="replace")
        output += chunk
        if pending and chunk.rstrip().endswith((b":", b"]:")):
            os.write(fd, pending.pop(0))
