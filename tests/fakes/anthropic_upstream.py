"""A fake Anthropic API: a real HTTP server on loopback speaking the Messages API wire format,
written from Anthropic's API reference.

- `POST /v1/messages`: a `Message` object, or with `"stream": true` the documented server-sent
  events (`message_start`, then per content block `content_block_start` / `content_block_delta`
  / `content_block_stop`, a `ping` after the first block starts, then `message_delta` and
  `message_stop`), each named by an `event:` line. Content comes in the order thinking (with its
  signature), text, tool uses.
- `POST /v1/messages/count_tokens`: `{"input_tokens": N}`, N a quarter of the characters of the
  request's text (system, message strings and text blocks) plus its tools' JSON, at least 1.
- Errors in Anthropic's shape, `{"type": "error", "error": {"type", "message"}}`: 400 without an
  `anthropic-version` header; 401 when `script.expected_key` is set and the request presents it
  neither as `x-api-key` nor as `Authorization: Bearer`; on `/v1/messages`, the script's status
  (`script.error` as the inner object, else the type the reference gives that status) and 400 for
  a request the real API would refuse (no `model`, no `max_tokens`, no or empty `messages`).
  `count_tokens` answers only the header and body checks, never the script's failure.

Every request is recorded with all its headers (`x-api-key`, `anthropic-version`,
`anthropic-beta`, ...) before it is judged.
"""

import json
import uuid
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer, Script, ToolCall, sse

# The error type the reference gives each status, for a failure scripted without its own body.
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error_body(error_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": error_type, "message": message}}


def error_response(status: int, error_type: str, message: str) -> web.Response:
    return web.json_response(error_body(error_type, message), status=status)


def stop_reason(script: Script) -> str:
    if script.tool_calls:
        return "tool_use"
    if script.stop == "max_tokens":
        return "max_tokens"
    return "end_turn"


def usage(script: Script, output_tokens: int) -> dict[str, int]:
    return {
        "input_tokens": script.prompt_tokens - script.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": script.cached_tokens,
        "output_tokens": output_tokens,
    }


def tool_use_block(call: ToolCall, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def content(script: Script) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if script.thinking:
        blocks.append(
            {"type": "thinking", "thinking": script.thinking, "signature": script.signature}
        )
    if script.text:
        blocks.append({"type": "text", "text": script.text})
    blocks.extend(tool_use_block(call, call.arguments) for call in script.tool_calls)
    return blocks


def message(body: dict[str, Any], script: Script) -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex[:24]}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content(script),
        "stop_reason": stop_reason(script),
        "stop_sequence": None,
        "usage": usage(script, script.completion_tokens),
    }


def fragments(text: str) -> list[str]:
    """Word-sized pieces of a text, spaces kept, that join back to it."""
    parts = text.split(" ")
    return [p if i == 0 else " " + p for i, p in enumerate(parts)]


def json_fragments(arguments: dict[str, Any]) -> list[str]:
    """The arguments' JSON cut in two or three pieces, as `input_json_delta` sends it."""
    text = json.dumps(arguments, ensure_ascii=False)
    third = len(text) // 3
    pieces = [text[:third], text[third : 2 * third], text[2 * third :]]
    return [piece for piece in pieces if piece]


def block_events(index: int, start: dict[str, Any], deltas: list[dict[str, Any]]) -> list[bytes]:
    events = [
        sse(
            {"type": "content_block_start", "index": index, "content_block": start},
            "content_block_start",
        )
    ]
    events.extend(
        sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta")
        for delta in deltas
    )
    events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    return events


def stream_events(body: dict[str, Any], script: Script) -> list[bytes]:
    started = message(body, script)
    started.update(content=[], stop_reason=None, usage=usage(script, 1))
    blocks: list[list[bytes]] = []
    if script.thinking:
        deltas = [{"type": "thinking_delta", "thinking": t} for t in fragments(script.thinking)]
        deltas.append({"type": "signature_delta", "signature": script.signature})
        start = {"type": "thinking", "thinking": "", "signature": ""}
        blocks.append(block_events(len(blocks), start, deltas))
    if script.text:
        deltas = [{"type": "text_delta", "text": word} for word in script.words]
        blocks.append(block_events(len(blocks), {"type": "text", "text": ""}, deltas))
    for call in script.tool_calls:
        deltas = [
            {"type": "input_json_delta", "partial_json": piece}
            for piece in call.pieces or json_fragments(call.arguments)
        ]
        blocks.append(block_events(len(blocks), tool_use_block(call, {}), deltas))

    ping = sse({"type": "ping"}, "ping")
    events = [sse({"type": "message_start", "message": started}, "message_start")]
    if not blocks:
        events.append(ping)
    for number, block in enumerate(blocks):
        # the reference's streams ping once, right after the first block starts
        events.extend([block[0], ping, *block[1:]] if number == 0 else block)
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason(script), "stop_sequence": None},
        "usage": {"output_tokens": script.completion_tokens},
    }
    events.append(sse(delta, "message_delta"))
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return events


def text_chars(value: Any) -> int:
    """Characters of the text in a system prompt or messages: strings, text and content fields."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(text_chars(item) for item in value)
    if isinstance(value, dict):
        return text_chars(value.get("text", "")) + text_chars(value.get("content", ""))
    return 0


def count_tokens(body: dict[str, Any]) -> int:
    chars = text_chars(body.get("system", "")) + text_chars(body["messages"])
    if body.get("tools"):
        chars += len(json.dumps(body["tools"], separators=(",", ":")))
    return max(1, chars // 4)


def presented_keys(request: web.Request) -> set[str]:
    """The API keys a request presents: `x-api-key`, the header the reference long named, or an
    `Authorization: Bearer` token, which the current reference and the official Python SDK (2.12
    here) use for API keys."""
    keys = {request.headers.get("x-api-key", "")}
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        keys.add(token)
    return keys - {""}


class FakeAnthropic(FakeServer):
    name = "anthropic"

    @property
    def url(self) -> str:
        """What the gateway is given: it appends `/v1/messages` itself."""
        return self.root

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_post("/v1/messages/count_tokens", self._count_tokens)

    def _refusal(self, request: web.Request) -> web.Response | None:
        """The header checks: the version is required, and the key when the script expects one."""
        if not request.headers.get("anthropic-version"):
            return error_response(
                400, "invalid_request_error", "anthropic-version: header is required"
            )
        expected = self._script.expected_key
        if expected and expected not in presented_keys(request):
            return error_response(401, "authentication_error", "invalid x-api-key")
        return None

    def _invalid(self, body: Any, *, creating: bool) -> web.Response | None:
        if not isinstance(body, dict):
            return error_response(
                400, "invalid_request_error", "The request body is not valid JSON."
            )
        if not isinstance(body.get("model"), str) or not body["model"]:
            return error_response(400, "invalid_request_error", "model: Field required")
        if creating and "max_tokens" not in body:
            return error_response(400, "invalid_request_error", "max_tokens: Field required")
        if creating and (not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1):
            return error_response(
                400, "invalid_request_error", "max_tokens: must be greater than or equal to 1"
            )
        if not isinstance(body.get("messages"), list):
            return error_response(400, "invalid_request_error", "messages: Field required")
        if not body["messages"]:
            return error_response(
                400, "invalid_request_error", "messages: at least one message is required"
            )
        return None

    def _scripted_failure(self) -> web.Response | None:
        script = self._script
        if script.status < 300:
            return None
        error = script.error or {
            "type": ERROR_TYPES.get(script.status, "api_error"),
            "message": "The fake provider failed.",
        }
        return web.json_response(
            {"type": "error", "error": error}, status=script.status, headers=script.headers
        )

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        script = self._script
        # `is not None`, never `or`: an aiohttp response is a mapping, so an empty one is falsy
        for answer in (
            self._refusal(request),
            self.canned(),
            self._scripted_failure(),
            self._invalid(seen.body, creating=True),
        ):
            if answer is not None:
                return answer
        body: dict[str, Any] = seen.body
        if body.get("stream"):
            return await self.send_events(request, stream_events(body, script), "text/event-stream")
        return web.json_response(message(body, script), headers=script.headers)

    async def _count_tokens(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        invalid = self._invalid(seen.body, creating=False)
        if invalid is not None:
            return invalid
        return web.json_response({"input_tokens": count_tokens(seen.body)})
