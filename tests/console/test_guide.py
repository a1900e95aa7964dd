"""The guide page: setup snippets filled in with the gateway's public URL and models."""

import html
import json
import os
import re
import subprocess
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from accounts import runtime
from accounts.models import RoleAssignment
from providers.models import Provider
from tests.conftest import LiveServer
from tests.console.conftest import signed_in
from tests.factories import AIModelFactory, ProviderFactory, RouteFactory, make_key
from tests.fakes.openai_upstream import FakeOpenAI


def snippet(page: str, element_id: str) -> str:
    found = re.search(rf'<textarea id="{element_id}"[^>]*>(.*?)</textarea>', page, re.S)
    assert found is not None, f"no snippet {element_id}"
    return html.unescape(found.group(1))


def guide(user: User) -> str:
    response = signed_in(user).get("/admin/guide/")
    assert response.status_code == 200
    return response.content.decode()


def set_public_url(url: str, capture: Any) -> None:
    with capture(execute=True):
        runtime.update({"gateway.public_url": url})


def test_it_fills_in_the_configured_public_url(
    alice: User, django_capture_on_commit_callbacks: Any
) -> None:
    set_public_url("https://ai.example.com/", django_capture_on_commit_callbacks)

    page = guide(alice)

    assert "export ANTHROPIC_BASE_URL=https://ai.example.com\n" in snippet(page, "tw-claude-code-1")
    assert snippet(page, "tw-claude-code-4").startswith(
        "claude mcp add --transport http thinkwatch https://ai.example.com/mcp "
    )
    assert snippet(page, "tw-cursor-1") == "https://ai.example.com/v1"
    assert "base_url='https://ai.example.com/v1'" in snippet(page, "tw-openai-python-1")
    assert "base_url='https://ai.example.com'" in snippet(page, "tw-anthropic-python-1")


def test_it_follows_a_change_of_the_public_url(
    alice: User, django_capture_on_commit_callbacks: Any
) -> None:
    set_public_url("https://old.example.com", django_capture_on_commit_callbacks)
    guide(alice)
    set_public_url("https://new.example.com", django_capture_on_commit_callbacks)

    page = guide(alice)

    assert "https://new.example.com/v1" in page
    assert "old.example.com" not in page


def test_it_fills_in_the_models_this_deployment_serves(alice: User) -> None:
    RouteFactory(model=AIModelFactory(model_id="claude-sonnet-4"))
    RouteFactory(model=AIModelFactory(model_id="gpt-4o"))
    AIModelFactory(model_id="unrouted")
    RouteFactory(model=AIModelFactory(model_id="switched-off", enabled=False))

    page = guide(alice)

    assert "export ANTHROPIC_MODEL=claude-sonnet-4\n" in snippet(page, "tw-claude-code-1")
    assert snippet(page, "tw-cline-2") == "gpt-4o"
    assert 'model: "claude-sonnet-4"' in snippet(page, "tw-continue-1")
    assert 'model: "gpt-4o"' in snippet(page, "tw-continue-1")
    assert "unrouted" not in page
    assert "switched-off" not in page


def test_it_names_what_reaches_the_providers_while_no_model_is_registered(alice: User) -> None:
    ProviderFactory(type="anthropic")

    page = guide(alice)

    assert "<code>claude-</code> reach your providers" in page
    assert "export ANTHROPIC_MODEL=MODEL_ID\n" in snippet(page, "tw-claude-code-1")


def test_it_writes_json_snippets_that_parse(alice: User) -> None:
    page = guide(alice)

    settings_json = json.loads(snippet(page, "tw-claude-code-2"))
    cursor_mcp = json.loads(snippet(page, "tw-cursor-3"))

    assert settings_json["apiKeyHelper"] == "~/.claude/thinkwatch-key.sh"
    assert cursor_mcp["mcpServers"]["thinkwatch"]["headers"] == {
        "Authorization": "Bearer ${env:THINKWATCH_API_KEY}"
    }


def test_it_shows_the_guide_to_a_developer(bob: User) -> None:
    assert "Claude Code" in guide(bob)


def test_it_sends_users_without_console_rights_to_sign_in(bob: User) -> None:
    RoleAssignment.objects.filter(user=bob).delete()

    response = signed_in(bob).get("/admin/guide/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_it_puts_no_key_in_the_page(bob: User) -> None:
    _, plaintext = make_key(bob)

    page = guide(bob)

    assert plaintext not in page
    assert re.search(r"tw-[0-9a-f]{16,}", page) is None


@pytest.fixture
def served(
    gateway: LiveServer, openai_provider: Provider, django_capture_on_commit_callbacks: Any
) -> str:
    """The live gateway, serving gpt-4o-mini, as the guide's public URL."""
    RouteFactory(model=AIModelFactory(model_id="gpt-4o-mini"), provider=openai_provider)
    set_public_url(gateway.url, django_capture_on_commit_callbacks)
    return gateway.url


def test_its_openai_python_snippet_runs_against_the_gateway(
    served: str,
    bob: User,
    bob_key: str,
    upstream: FakeOpenAI,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = snippet(guide(bob), "tw-openai-python-1")
    monkeypatch.setenv("THINKWATCH_API_KEY", bob_key)

    exec(compile(code, "guide-openai-python", "exec"), {})  # noqa: S102

    assert capsys.readouterr().out.strip() == upstream._script.text


def test_its_curl_snippet_lists_the_models_the_key_may_use(
    served: str, bob: User, bob_key: str
) -> None:
    command = snippet(guide(bob), "tw-curl-1")

    result = subprocess.run(
        ["sh", "-c", f"{command} --silent"],
        env={**os.environ, "THINKWATCH_API_KEY": bob_key},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )

    assert [m["id"] for m in json.loads(result.stdout)["data"]] == ["gpt-4o-mini"]


def test_it_needs_a_signed_in_visitor(db: None) -> None:
    response = Client().get("/admin/guide/")

    assert response.status_code == 302
