"""The console's guide page: copy-paste setup for the clients people point at the gateway,
filled in with the gateway's public URL (the `gateway.public_url` runtime setting) and the
models this deployment serves. No key is ever filled in: each snippet reads the caller's
own key from the THINKWATCH_API_KEY environment variable, or says where to paste it.
"""

import json
import shlex
from dataclasses import dataclass, field

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from accounts.runtime import setting
from providers.cache import RouteTable, load_route_table

KEY_VARIABLE = "THINKWATCH_API_KEY"


@dataclass(frozen=True)
class Snippet:
    title: str
    text: str

    @property
    def rows(self) -> int:
        return len(self.text.splitlines()) or 1


@dataclass(frozen=True)
class Section:
    slug: str
    title: str
    intro: str
    snippets: list[Snippet]
    steps: list[str] = field(default_factory=list)


def served(table: RouteTable) -> tuple[list[str], list[str]]:
    """The models a client can call (what the gateway's /v1/models lists) and the model-name
    prefixes enabled providers serve without registration (gpt-, claude-, ...), from the
    gateway's own route table."""
    models = sorted(plan.model_id for plan in table.listed_models())
    prefixes = sorted({prefix for prefix, _ in table.prefixes})
    return models, prefixes


def _mcp_server_name() -> str:
    """The name to register the MCP gateway under, so that the client's tool prefix
    (mcp__<name>__) is the one the gateway sizes tool names for."""
    prefix = settings.MCP_CLIENT_PREFIX
    name = prefix.removeprefix("mcp__").removesuffix("__")
    return name if prefix.startswith("mcp__") and name else "thinkwatch"


def _claude_code(gateway: str, model: str, small_model: str) -> Section:
    env = {
        "ANTHROPIC_BASE_URL": gateway,
        "ANTHROPIC_MODEL": model,
        "ANTHROPIC_DEFAULT_HAIKU_MODEL": small_model,
    }
    exports = "\n".join(f"export {k}={shlex.quote(v)}" for k, v in env.items())
    settings_json = json.dumps(
        {"env": env, "apiKeyHelper": "~/.claude/thinkwatch-key.sh"}, indent=2
    )
    server = _mcp_server_name()
    return Section(
        "claude-code",
        "Claude Code",
        "Claude Code speaks the Anthropic Messages API and appends /v1/messages to the base "
        "URL itself. It sends ANTHROPIC_AUTH_TOKEN as 'Authorization: Bearer'. The small "
        "model is what it uses for background work; both must be models served here.",
        [
            Snippet(
                "In your shell",
                f'{exports}\nexport ANTHROPIC_AUTH_TOKEN="${KEY_VARIABLE}"\nclaude',
            ),
            Snippet(
                "Or in ~/.claude/settings.json, with a helper that prints your key "
                "(keeps it out of the file)",
                settings_json,
            ),
            Snippet(
                "~/.claude/thinkwatch-key.sh (chmod 700; fetch the key from wherever you keep it)",
                '#!/bin/sh\ncat "$HOME/.config/thinkwatch/key"',
            ),
            Snippet(
                "The MCP gateway: every MCP server this deployment offers you, as one",
                f"claude mcp add --transport http {server} {shlex.quote(gateway + '/mcp')} "
                f'--header "Authorization: Bearer ${KEY_VARIABLE}"',
            ),
        ],
    )


def _cursor(gateway: str, model: str) -> Section:
    mcp = {
        "mcpServers": {
            _mcp_server_name(): {
                "url": f"{gateway}/mcp",
                "headers": {"Authorization": f"Bearer ${{env:{KEY_VARIABLE}}}"},
            }
        }
    }
    return Section(
        "cursor",
        "Cursor",
        "Cursor reaches other models through its OpenAI settings; Cursor's own features "
        "(Tab completion, its Auto model) do not go through the gateway.",
        [
            Snippet("Override OpenAI Base URL", f"{gateway}/v1"),
            Snippet("Model to add", model),
            Snippet("The MCP gateway, in ~/.cursor/mcp.json", json.dumps(mcp, indent=2)),
        ],
        steps=[
            "Open Cursor Settings → Models → API Keys.",
            "Turn on OpenAI API Key and paste your ThinkWatch key (tw-…).",
            "Turn on Override OpenAI Base URL and paste the URL below.",
            "Add the model below with + Add model, enable it, and choose it in the chat.",
        ],
    )


def _continue(gateway: str, models: list[str]) -> Section:
    entries = "\n".join(
        f"  - name: {json.dumps(m + ' (ThinkWatch)')}\n"
        "    provider: openai\n"
        f"    model: {json.dumps(m)}\n"
        f"    apiBase: {json.dumps(gateway + '/v1')}\n"
        f"    apiKey: ${{{{ secrets.{KEY_VARIABLE} }}}}\n"
        "    roles: [chat, edit, apply]"
        for m in models
    )
    config = f"name: ThinkWatch\nversion: 0.0.1\nschema: v1\nmodels:\n{entries}"
    return Section(
        "continue",
        "Continue",
        f"In ~/.continue/config.yaml. Continue reads {KEY_VARIABLE} from ~/.continue/.env "
        f"({KEY_VARIABLE}=tw-…).",
        [Snippet("~/.continue/config.yaml", config)],
    )


def _cline(gateway: str, model: str) -> Section:
    return Section(
        "cline",
        "Cline",
        "Cline's settings (the gear in the Cline panel).",
        [Snippet("Base URL", f"{gateway}/v1"), Snippet("Model ID", model)],
        steps=[
            "API Provider: OpenAI Compatible.",
            "Base URL: the URL below.",
            "API Key: your ThinkWatch key (tw-…).",
            "Model ID: the model below.",
        ],
    )


def _openai_sdks(gateway: str, model: str) -> list[Section]:
    python = (
        "import os\n\nfrom openai import OpenAI\n\n"
        f"client = OpenAI(base_url={gateway + '/v1'!r}, "
        f'api_key=os.environ["{KEY_VARIABLE}"])\n'
        "reply = client.chat.completions.create(\n"
        f"    model={model!r},\n"
        '    messages=[{"role": "user", "content": "Hello"}],\n'
        ")\nprint(reply.choices[0].message.content)"
    )
    node = (
        'import OpenAI from "openai";\n\n'
        "const client = new OpenAI({\n"
        f"  baseURL: {json.dumps(gateway + '/v1')},\n"
        f"  apiKey: process.env.{KEY_VARIABLE},\n"
        "});\n"
        "const reply = await client.chat.completions.create({\n"
        f"  model: {json.dumps(model)},\n"
        '  messages: [{ role: "user", content: "Hello" }],\n'
        "});\nconsole.log(reply.choices[0].message.content);"
    )
    return [
        Section(
            "openai-python",
            "OpenAI SDK for Python",
            "pip install openai",
            [Snippet("Python", python)],
        ),
        Section(
            "openai-node",
            "OpenAI SDK for Node.js",
            "npm install openai",
            [Snippet("JavaScript (ES module)", node)],
        ),
    ]


def _anthropic_sdk(gateway: str, model: str) -> Section:
    python = (
        "import os\n\nimport anthropic\n\n"
        f"client = anthropic.Anthropic(base_url={gateway!r}, "
        f'api_key=os.environ["{KEY_VARIABLE}"])\n'
        "message = client.messages.create(\n"
        f"    model={model!r},\n"
        "    max_tokens=1024,\n"
        '    messages=[{"role": "user", "content": "Hello"}],\n'
        ")\nprint(message.content[0].text)"
    )
    return Section(
        "anthropic-python",
        "Anthropic SDK for Python",
        "pip install anthropic. The base URL is the gateway itself: the SDK adds /v1/messages.",
        [Snippet("Python", python)],
    )


def _curl(gateway: str, model: str, anthropic_model: str) -> Section:
    openai_body = json.dumps({"model": model, "messages": [{"role": "user", "content": "Hello"}]})
    anthropic_body = json.dumps(
        {
            "model": anthropic_model,
            "max_tokens": 256,
            "messages": [{"role": "user", "content": "Hello"}],
        }
    )
    return Section(
        "curl",
        "curl",
        "Check a key and the models it may use, then call each API.",
        [
            Snippet(
                "Models this key may use",
                f"curl {shlex.quote(gateway + '/v1/models')} \\\n"
                f'  -H "Authorization: Bearer ${KEY_VARIABLE}"',
            ),
            Snippet(
                "OpenAI Chat Completions",
                f"curl {shlex.quote(gateway + '/v1/chat/completions')} \\\n"
                f'  -H "Authorization: Bearer ${KEY_VARIABLE}" \\\n'
                '  -H "Content-Type: application/json" \\\n'
                f"  -d {shlex.quote(openai_body)}",
            ),
            Snippet(
                "Anthropic Messages",
                f"curl {shlex.quote(gateway + '/v1/messages')} \\\n"
                f'  -H "x-api-key: ${KEY_VARIABLE}" \\\n'
                '  -H "anthropic-version: 2023-06-01" \\\n'
                '  -H "Content-Type: application/json" \\\n'
                f"  -d {shlex.quote(anthropic_body)}",
            ),
        ],
    )


def sections(gateway: str, models: list[str]) -> list[Section]:
    """Every client's setup for this gateway URL and these models (at least one)."""
    gateway = gateway.rstrip("/")
    # Any model works through either API; show each client a model of its own family.
    model = next((m for m in models if not m.startswith("claude")), models[0])
    claude = next((m for m in models if m.startswith("claude")), model)
    small = next((m for m in models if "haiku" in m), claude)
    return [
        _claude_code(gateway, claude, small),
        _cursor(gateway, model),
        _continue(gateway, models),
        _cline(gateway, model),
        *_openai_sdks(gateway, model),
        _anthropic_sdk(gateway, claude),
        _curl(gateway, model, claude),
    ]


@require_GET
def guide(request: HttpRequest) -> HttpResponse:
    models, prefixes = served(load_route_table())
    gateway = setting("gateway.public_url")
    context = {
        **admin.site.each_context(request),
        "title": "Connect your tools",
        "gateway": gateway.rstrip("/"),
        "models": models,
        "prefixes": [] if models else prefixes,
        "key_variable": KEY_VARIABLE,
        # Without a served model the snippets still show the shape, with a name to replace.
        "sections": sections(gateway, models or ["MODEL_ID"]),
    }
    return render(request, "console/guide.html", context)
