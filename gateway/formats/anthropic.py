"""Anthropic Messages on the wire: what Anthropic clients send (ingress) and what the
Anthropic API speaks (provider)."""

import time
from typing import Any

import orjson

from gateway.errors import GatewayError, bad_request
from gateway.formats import canonical as c
from gateway.formats.openai_chat import (
    arguments_json,
    estimate_input_tokens,
    parse_json_object,
    rename_model,
)
from providers.pricing import Usage
from providers.specs import ProviderSpec
from thinkwatch.lib import sse

INGRESS = "anthropic_messages"
WHERE = "Anthropic"
DEFAULT_MAX_TOKENS = 4096
_EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}

STOP_FROM: dict[str, c.StopReason] = {
    "end_turn": "end",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "refusal": "refusal",
    "pause_turn": "end",
}
STOP_TO = {
    "end": "end_turn",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "tool_use": "tool_use",
    "content_filter": "refusal",
    "refusal": "refusal",
}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


def error_body(error: GatewayError) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": ERROR_TYPES.get(error.status, "api_error"), "message": error.message},
    }


def error_event(error: GatewayError) -> bytes:
    return sse.encode(orjson.dumps(error_body(error)), "error")


# --- reading a client's request --------------------------------------------------------


def parse_request(body: bytes) -> dict[str, Any]:
    payload = parse_json_object(body)
    if not isinstance(payload.get("model"), str) or not payload["model"].strip():
        raise bad_request("model: Field required (a non-empty string).", "missing_model")
    if not isinstance(payload.get("messages"), list) or not payload["messages"]:
        raise bad_request("messages: Field required (a non-empty array).", "invalid_messages")
    max_tokens = payload.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise bad_request("max_tokens: Field required (a positive integer).", "invalid_max_tokens")
    if not isinstance(payload.get("stream", False), bool):
        raise bad_request("stream: must be true or false.", "invalid_stream")
    return payload


def parse_count_request(body: bytes) -> dict[str, Any]:
    payload = parse_json_object(body)
    if not isinstance(payload.get("model"), str) or not payload["model"].strip():
        raise bad_request("model: Field required (a non-empty string).", "missing_model")
    if not isinstance(payload.get("messages"), list):
        raise bad_request("messages: Field required (an array).", "invalid_messages")
    return payload


def _text_blocks(content: Any, field: str) -> list[c.Text]:
    if isinstance(content, str):
        return [c.Text(content)] if content else []
    if not isinstance(content, list):
        raise bad_request(f"{field}: must be a string or an array of blocks.")
    return [
        c.Text(str(b.get("text") or ""), bool(b.get("cache_control")))
        for b in content
        if b.get("type") == "text"
    ]


def _image(block: dict[str, Any]) -> c.Image:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        return c.Image(
            media_type=str(source.get("media_type") or ""), data=str(source.get("data") or "")
        )
    if source.get("type") == "url":
        return c.Image(url=str(source.get("url") or ""))
    raise c.Unsupported(
        f"image sources of type {source.get('type')!r}", "providers other than Anthropic"
    )


def _blocks(content: Any, role: str, names: dict[str, str]) -> list[c.Part]:
    if isinstance(content, str):
        return [c.Text(content)] if content else []
    if not isinstance(content, list):
        raise bad_request("messages.content: must be a string or an array of blocks.")
    parts: list[c.Part] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            parts.append(c.Text(str(block.get("text") or ""), bool(block.get("cache_control"))))
        elif kind == "image":
            parts.append(_image(block))
        elif kind == "tool_use" and role == "assistant":
            names[str(block.get("id"))] = str(block.get("name") or "")
            parts.append(
                c.ToolCall(
                    str(block.get("id") or ""),
                    str(block.get("name") or ""),
                    orjson.dumps(block.get("input") or {}).decode(),
                )
            )
        elif kind == "tool_result":
            call_id = str(block.get("tool_use_id") or "")
            content_parts = _result_content(block.get("content"))
            parts.append(
                c.ToolResult(
                    call_id, names.get(call_id, ""), content_parts, bool(block.get("is_error"))
                )
            )
        elif kind == "thinking":
            parts.append(
                c.Thinking(str(block.get("thinking") or ""), str(block.get("signature") or ""))
            )
        elif kind == "redacted_thinking":
            parts.append(c.Thinking(redacted=str(block.get("data") or "")))
        else:
            raise c.Unsupported(
                f"content blocks of type {kind!r}", "providers other than Anthropic"
            )
    return parts


def _result_content(content: Any) -> list[c.Text | c.Image]:
    if content is None:
        return []
    if isinstance(content, str):
        return [c.Text(content)]
    out: list[c.Text | c.Image] = []
    for block in content:
        if block.get("type") == "text":
            out.append(c.Text(str(block.get("text") or "")))
        elif block.get("type") == "image":
            out.append(_image(block))
        else:
            raise c.Unsupported(
                f"tool results with {block.get('type')!r} blocks", "providers other than Anthropic"
            )
    return out


def decode_request(payload: dict[str, Any]) -> c.Request:
    names: dict[str, str] = {}
    messages = [
        c.Message(
            "assistant" if m.get("role") == "assistant" else "user",
            _blocks(m.get("content"), str(m.get("role")), names),
        )
        for m in payload["messages"]
    ]
    tools = []
    for tool in payload.get("tools") or []:
        if tool.get("type") not in (None, "custom"):
            raise c.Unsupported(
                f"the server tool {tool.get('type')!r}", "providers other than Anthropic"
            )
        tools.append(
            c.Tool(
                str(tool.get("name") or ""),
                str(tool.get("description") or ""),
                tool.get("input_schema") or {"type": "object", "properties": {}},
            )
        )
    request = c.Request(
        model=payload["model"],
        messages=messages,
        system=_text_blocks(payload.get("system") or [], "system"),
        tools=tools,
        max_tokens=payload.get("max_tokens"),
        temperature=payload.get("temperature"),
        top_p=payload.get("top_p"),
        top_k=payload.get("top_k"),
        stop=list(payload.get("stop_sequences") or []),
        stream=bool(payload.get("stream")),
        user=(payload.get("metadata") or {}).get("user_id"),
    )
    choice = payload.get("tool_choice")
    if isinstance(choice, dict):
        mode = {"auto": "auto", "any": "required", "tool": "tool", "none": "none"}.get(
            str(choice.get("type"))
        )
        if mode is None:
            raise bad_request(f"tool_choice.type: unknown value {choice.get('type')!r}.")
        request.tool_choice = c.ToolChoice(mode, str(choice.get("name") or ""))  # type: ignore[arg-type]
        if choice.get("disable_parallel_tool_use"):
            request.parallel_tool_calls = False
    thinking = payload.get("thinking") or {}
    if thinking.get("type") == "enabled":
        request.reasoning = c.Reasoning(budget_tokens=thinking.get("budget_tokens"), summary=True)
    return request


# --- writing a request for the Anthropic API ------------------------------------------


def encode_request(request: c.Request, model: str, spec: ProviderSpec) -> dict[str, Any]:
    if request.output:
        raise c.Unsupported("JSON output ('response_format')", "Anthropic")
    if request.extras:
        raise c.Unsupported(f"'{next(iter(request.extras))}'", "Anthropic")
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": encode_messages(request.messages),
    }
    if request.system:
        body["system"] = [_text_block(t) for t in request.system]
    if request.tools:
        body["tools"] = [
            {"name": t.name, "description": t.description, "input_schema": t.parameters}
            for t in request.tools
        ]
    choice = _encode_tool_choice(request)
    if choice:
        body["tool_choice"] = choice
    for name in ("temperature", "top_p", "top_k"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.stop:
        body["stop_sequences"] = request.stop
    if request.reasoning:
        budget = request.reasoning.budget_tokens or _EFFORT_BUDGET.get(
            request.reasoning.effort, 8192
        )
        body["thinking"] = {"type": "enabled", "budget_tokens": budget}
        body["max_tokens"] = max(body["max_tokens"], budget + DEFAULT_MAX_TOKENS)
        body.pop("temperature", None)  # Anthropic refuses temperature with thinking
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if request.stream:
        body["stream"] = True
    return body


def _encode_tool_choice(request: c.Request) -> dict[str, Any] | None:
    choice = request.tool_choice
    if choice is None and request.parallel_tool_calls is not False:
        return None
    mode = choice.mode if choice else "auto"
    out: dict[str, Any] = {
        "type": {"auto": "auto", "none": "none", "required": "any", "tool": "tool"}[mode]
    }
    if mode == "tool":
        out["name"] = choice.name  # type: ignore[union-attr]
    if request.parallel_tool_calls is False and mode != "none":
        out["disable_parallel_tool_use"] = True
    return out


def _text_block(text: c.Text) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": text.text}
    if text.cache:
        block["cache_control"] = {"type": "ephemeral"}
    return block


def _image_block(image: c.Image) -> dict[str, Any]:
    if image.url:
        return {"type": "image", "source": {"type": "url", "url": image.url}}
    return {
        "type": "image",
        "source": {"type": "base64", "media_type": image.media_type, "data": image.data},
    }


def encode_messages(messages: list[c.Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        blocks = [b for b in (_encode_part(p) for p in message.parts) if b is not None]
        if not blocks:
            continue
        if out and out[-1]["role"] == message.role:
            out[-1]["content"] += blocks  # Anthropic wants user and assistant turns to alternate
        else:
            out.append({"role": message.role, "content": blocks})
    return out


def _encode_part(part: c.Part) -> dict[str, Any] | None:
    if isinstance(part, c.Text):
        return _text_block(part) if part.text else None
    if isinstance(part, c.Image):
        return _image_block(part)
    if isinstance(part, c.ToolCall):
        return {
            "type": "tool_use",
            "id": part.id,
            "name": part.name,
            "input": arguments_json(part.arguments),
        }
    if isinstance(part, c.ToolResult):
        content = [
            _text_block(x) if isinstance(x, c.Text) else _image_block(x) for x in part.content
        ]
        block: dict[str, Any] = {
            "type": "tool_result",
            "tool_use_id": part.call_id,
            "content": content,
        }
        if part.is_error:
            block["is_error"] = True
        return block
    if part.redacted:
        return {"type": "redacted_thinking", "data": part.redacted}
    if part.signature:
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return None  # another provider's reasoning: Anthropic cannot verify it, so it stays out


# --- reading the Anthropic API's answer ------------------------------------------------


def usage_of(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    cached = usage.get("cache_read_input_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0
    return Usage(
        input=(usage.get("input_tokens") or 0) + cached + written,
        output=usage.get("output_tokens") or 0,
        cached=cached,
    )


def decode_response(payload: dict[str, Any]) -> c.Response:
    parts: list[c.Part] = []
    for block in payload.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            parts.append(c.Text(str(block.get("text") or "")))
        elif kind == "tool_use":
            parts.append(
                c.ToolCall(
                    str(block.get("id")),
                    str(block.get("name")),
                    orjson.dumps(block.get("input") or {}).decode(),
                )
            )
        elif kind == "thinking":
            parts.append(
                c.Thinking(str(block.get("thinking") or ""), str(block.get("signature") or ""))
            )
        elif kind == "redacted_thinking":
            parts.append(c.Thinking(redacted=str(block.get("data") or "")))
    return c.Response(
        id=str(payload.get("id") or ""),
        model=str(payload.get("model") or ""),
        parts=parts,
        stop=STOP_FROM.get(str(payload.get("stop_reason")), "end"),
        stop_sequence=payload.get("stop_sequence"),
        usage=usage_of(payload.get("usage")) or Usage(),
    )


_BLOCK_KINDS: dict[str, c.BlockKind] = {
    "text": "text",
    "thinking": "thinking",
    "tool_use": "tool_call",
}


class StreamDecoder:
    """An Anthropic Messages stream as canonical events."""

    content_type = "text/event-stream"

    def __init__(self) -> None:
        self._splitter = sse.EventSplitter()
        self._blocks = c.Blocks()
        self._start_usage: dict[str, Any] = {}

    def feed(self, chunk: bytes) -> list[c.Event]:
        events: list[c.Event] = []
        for raw in self._splitter.feed(chunk):
            data = sse.data_of(raw)
            if data:
                events += self._decode(orjson.loads(data))
        return events

    def _decode(self, event: dict[str, Any]) -> list[c.Event]:
        kind = event.get("type")
        blocks = self._blocks
        if kind == "message_start":
            message = event.get("message") or {}
            self._start_usage = message.get("usage") or {}
            return [
                c.Start(str(message.get("id") or ""), str(message.get("model") or "")),
                c.UsageReport(usage_of(self._start_usage) or Usage()),
            ]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            block_kind = _BLOCK_KINDS.get(str(block.get("type")))
            if block_kind is None:
                return []  # redacted thinking and server-tool blocks have no canonical stream form
            key = event.get("index")
            started = blocks.start(
                key, block_kind, str(block.get("id") or ""), str(block.get("name") or "")
            )
            index = blocks.get(key)
            if block.get("text") and index is not None:
                started.append(c.Delta(index, block["text"]))
            return started
        if kind == "content_block_delta":
            index = blocks.get(event.get("index"))
            delta = event.get("delta") or {}
            if index is None:
                return []
            text = delta.get("text") or delta.get("thinking") or delta.get("partial_json")
            if delta.get("type") == "signature_delta":
                return [c.SignatureDelta(index, str(delta.get("signature") or ""))]
            return [c.Delta(index, str(text))] if text else []
        if kind == "content_block_stop":
            index = blocks.get(event.get("index"))
            if index is not None and index in blocks.open:
                blocks.open.remove(index)
                return [c.BlockStop(index)]
            return []
        if kind == "message_delta":
            delta = event.get("delta") or {}
            usage = {
                **self._start_usage,
                **{k: v for k, v in (event.get("usage") or {}).items() if v is not None},
            }
            events: list[c.Event] = [c.UsageReport(usage_of(usage) or Usage())]
            if delta.get("stop_reason"):
                events.append(
                    c.Stop(STOP_FROM.get(delta["stop_reason"], "end"), delta.get("stop_sequence"))
                )
            return events
        if kind == "error":
            from gateway.formats.openai_chat import UpstreamStreamError

            raise UpstreamStreamError(
                str((event.get("error") or {}).get("message") or "stream error")
            )
        return []

    def close(self) -> list[c.Event]:
        return self._blocks.close_all()


# --- writing the answer for an Anthropic client ---------------------------------------


def _message_id(upstream_id: str) -> str:
    return upstream_id if upstream_id.startswith("msg_") else f"msg_{upstream_id or time.time_ns()}"


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": max(usage.input - usage.cached, 0),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached,
        "output_tokens": usage.output,
    }


def encode_response(response: c.Response, model: str) -> dict[str, Any]:
    content = []
    for part in response.parts:
        if isinstance(part, c.Text) and part.text:
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, c.ToolCall):
            content.append(
                {
                    "type": "tool_use",
                    "id": part.id,
                    "name": part.name,
                    "input": arguments_json(part.arguments),
                }
            )
        elif isinstance(part, c.Thinking) and part.redacted:
            content.append({"type": "redacted_thinking", "data": part.redacted})
        elif isinstance(part, c.Thinking):
            content.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
    return {
        "id": _message_id(response.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_TO[response.stop],
        "stop_sequence": response.stop_sequence,
        "usage": usage_body(response.usage),
    }


class StreamEncoder:
    """Canonical events as `message_start … message_stop`."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._kinds: dict[int, c.BlockKind] = {}
        self._index: dict[int, int] = {}  # canonical block -> Anthropic content index
        self._open: set[int] = set()
        self._stop: c.Stop = c.Stop("end")
        self._usage = Usage()
        self._started = False

    def _event(self, name: str, data: dict[str, Any]) -> bytes:
        return sse.encode(orjson.dumps({"type": name, **data}), name)

    def _start(self, upstream_id: str) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": _message_id(upstream_id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage_body(self._usage) | {"output_tokens": 1},
        }
        return self._event("message_start", {"message": message})

    def feed(self, events: list[c.Event]) -> bytes:
        out = []
        for event in events:
            if isinstance(event, c.Start):
                out.append(self._start(event.id))
            elif isinstance(event, c.BlockStart):
                out.append(self._block_start(event))
            elif isinstance(event, c.Delta):
                out.append(self._delta(event))
            elif isinstance(event, c.SignatureDelta) and event.index in self._open:
                delta = {"type": "signature_delta", "signature": event.signature}
                out.append(
                    self._event(
                        "content_block_delta", {"index": self._index[event.index], "delta": delta}
                    )
                )
            elif isinstance(event, c.BlockStop) and event.index in self._open:
                self._open.discard(event.index)
                out.append(self._event("content_block_stop", {"index": self._index[event.index]}))
            elif isinstance(event, c.Stop):
                self._stop = event
            elif isinstance(event, c.UsageReport):
                self._usage = event.usage
        return b"".join(out)

    def _block_start(self, event: c.BlockStart) -> bytes:
        head = b"" if self._started else self._start("")
        self._kinds[event.index] = event.kind
        self._index[event.index] = len(self._index)
        self._open.add(event.index)
        if event.kind == "tool_call":
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": event.call_id,
                "name": event.name,
                "input": {},
            }
        elif event.kind == "thinking":
            block = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            block = {"type": "text", "text": ""}
        return head + self._event(
            "content_block_start", {"index": self._index[event.index], "content_block": block}
        )

    def _delta(self, event: c.Delta) -> bytes:
        if event.index not in self._open:
            return b""
        kind = self._kinds[event.index]
        if kind == "tool_call":
            delta = {"type": "input_json_delta", "partial_json": event.text}
        elif kind == "thinking":
            delta = {"type": "thinking_delta", "thinking": event.text}
        else:
            delta = {"type": "text_delta", "text": event.text}
        return self._event(
            "content_block_delta", {"index": self._index[event.index], "delta": delta}
        )

    def close(self) -> bytes:
        out = [b"" if self._started else self._start("")]
        for index in sorted(self._open):
            out.append(self._event("content_block_stop", {"index": self._index[index]}))
        self._open.clear()
        delta = {"stop_reason": STOP_TO[self._stop.reason], "stop_sequence": self._stop.sequence}
        out.append(self._event("message_delta", {"delta": delta, "usage": usage_body(self._usage)}))
        out.append(self._event("message_stop", {}))
        return b"".join(out)


# --- passing same-format traffic through ---------------------------------------------


def upstream_body(
    payload: dict[str, Any], raw: bytes, upstream_model: str, ask_usage: bool
) -> tuple[bytes, bool]:
    if payload["model"] == upstream_model:
        return raw, False
    return orjson.dumps({**payload, "model": upstream_model}), False


class StreamScan:
    """Reads an Anthropic stream for accounting while it passes through: input tokens
    from `message_start`, output tokens from `message_delta`."""

    __slots__ = (
        "asked",
        "deltas",
        "error",
        "estimated_input",
        "start_usage",
        "upstream_model",
        "usage",
    )

    def __init__(self, added_usage: bool, upstream_model: str, asked: str, body: bytes) -> None:
        self.estimated_input = estimate_input_tokens(body)
        self.upstream_model = upstream_model if upstream_model != asked else None
        self.asked = asked
        self.usage: Usage | None = None
        self.start_usage: dict[str, Any] = {}
        self.error: str | None = None
        self.deltas = 0

    def forward(self, events: list[bytes]) -> bytes:
        out = []
        for event in events:
            if b"content_block_delta" in event:
                self.deltas += 1
            elif b"message_start" in event or b"message_delta" in event or b"event: error" in event:
                self._inspect(event)
                if self.upstream_model is not None and b"message_start" in event:
                    event = rename_model(event, self.upstream_model, self.asked)
            out.append(event)
        return b"".join(out)

    def _inspect(self, event: bytes) -> None:
        try:
            data = orjson.loads(sse.data_of(event))
        except orjson.JSONDecodeError:
            return
        if data.get("type") == "message_start":
            self.start_usage = (data.get("message") or {}).get("usage") or {}
            self.usage = usage_of(self.start_usage)
        elif data.get("type") == "message_delta":
            merged = {
                **self.start_usage,
                **{k: v for k, v in (data.get("usage") or {}).items() if v is not None},
            }
            self.usage = usage_of(merged)
        elif data.get("type") == "error":
            self.error = str((data.get("error") or {}).get("message") or "")[:500]
