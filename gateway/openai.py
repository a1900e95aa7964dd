"""OpenAI Chat Completions on the wire: what the gateway reads, checks and rewrites.

Pure functions over bytes and dicts. Bodies are passed through untouched unless something
must change (the upstream model name, the usage request of a stream).
"""

import re
from functools import lru_cache
from typing import Any

import orjson

from gateway.errors import GatewayError, bad_request, openai_body
from providers.pricing import Usage
from thinkwatch.lib import sse

INGRESS = "openai_chat"


def parse_request(body: bytes) -> dict[str, Any]:
    if not body:
        raise bad_request("The request body is empty; send a JSON chat completion request.")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.", "invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    model = payload.get("model")
    if not isinstance(model, str) or not model.strip():
        raise bad_request("'model' is required and must be a non-empty string.", "missing_model")
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request(
            "'messages' is required and must be a non-empty array.", "invalid_messages"
        )
    if not isinstance(payload.get("stream", False), bool | None):
        raise bad_request("'stream' must be true or false.", "invalid_stream")
    options = payload.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise bad_request("'stream_options' must be an object.", "invalid_stream_options")
    return payload


def upstream_body(
    payload: dict[str, Any], raw: bytes, upstream_model: str, ask_usage: bool
) -> tuple[bytes, bool]:
    """The body to send upstream, and whether the gateway added a usage request to a
    stream (then the extra usage chunk must not reach the client)."""
    changed = False
    if payload["model"] != upstream_model:
        payload = {**payload, "model": upstream_model}
        changed = True
    added_usage = False
    if payload.get("stream") and ask_usage:
        options = payload.get("stream_options") or {}
        if not options.get("include_usage"):
            payload = {**payload, "stream_options": {**options, "include_usage": True}}
            added_usage = changed = True
    return (orjson.dumps(payload) if changed else raw), added_usage


def estimate_input_tokens(body: bytes) -> int:
    """A rough count (4 bytes a token) for when the provider's own count never came."""
    return len(body) // 4


def _int(value: object) -> int:
    return value if isinstance(value, int) and value > 0 else 0


def usage_of(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    prompt_details = usage.get("prompt_tokens_details") or {}
    completion_details = usage.get("completion_tokens_details") or {}
    return Usage(
        input=_int(usage.get("prompt_tokens")),
        output=_int(usage.get("completion_tokens")),
        cached=_int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0,
        reasoning=(
            _int(completion_details.get("reasoning_tokens"))
            if isinstance(completion_details, dict)
            else 0
        ),
    )


@lru_cache(maxsize=1024)
def _model_field(name: str) -> re.Pattern[bytes]:
    return re.compile(rb'("model"\s*:\s*")' + re.escape(orjson.dumps(name)[1:-1]) + rb'"')


def rename_model(data: bytes, upstream_model: str, asked: str) -> bytes:
    """Show the client the model name it asked for instead of the provider's alias.

    Only the top-level field can match: inside message text a quote is escaped.
    """
    replacement = rb"\g<1>" + orjson.dumps(asked)[1:-1].replace(b"\\", b"\\\\") + b'"'
    return _model_field(upstream_model).sub(replacement, data, count=1)


def error_event(error: GatewayError) -> bytes:
    return sse.encode(orjson.dumps(openai_body(error)))


class StreamScan:
    """Reads a chat completion stream for accounting while it passes through."""

    __slots__ = (
        "added_usage",
        "asked",
        "deltas",
        "error",
        "estimated_input",
        "upstream_model",
        "usage",
    )

    def __init__(self, added_usage: bool, upstream_model: str, asked: str, body: bytes) -> None:
        self.estimated_input = estimate_input_tokens(body)
        self.added_usage = added_usage
        self.upstream_model = upstream_model if upstream_model != asked else None
        self.asked = asked
        self.usage: Usage | None = None
        self.error: str | None = None
        self.deltas = 0  # chunks that carried generated output (about one token each)

    def forward(self, events: list[bytes]) -> bytes:
        """The bytes of `events` the client should receive."""
        out = []
        for event in events:
            if b'"delta"' in event and (b'"content":"' in event or b'"tool_calls"' in event):
                self.deltas += 1
            # Most chunks say "usage":null; only parse the ones that may carry something.
            maybe_usage = b'"usage"' in event and b'"usage":null' not in event
            if (maybe_usage or b'"error"' in event) and not self._inspect(event):
                continue
            if self.upstream_model is not None:
                event = rename_model(event, self.upstream_model, self.asked)
            out.append(event)
        return b"".join(out)

    def _inspect(self, event: bytes) -> bool:
        data = sse.data_of(event)
        if not data or data == b"[DONE]":
            return True
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(chunk, dict):
            return True
        if "error" in chunk:
            error = chunk["error"]
            self.error = str(error.get("message") if isinstance(error, dict) else error)[:500]
        usage = usage_of(chunk.get("usage"))
        if usage is None:
            return True
        self.usage = usage
        # The usage-only chunk the gateway asked for on the client's behalf stays here.
        return not (self.added_usage and not chunk.get("choices"))
