"""OpenAI Chat Completions on the wire, both as what clients send (ingress) and as what
OpenAI, Azure OpenAI and OpenAI-compatible servers speak (provider).

Pure functions over bytes and dicts. Same-format traffic is passed through untouched,
except where something must change (the upstream model name, the stream usage request).
"""

import json
import re
import time
from functools import lru_cache
from typing import Any

import orjson

from gateway.errors import GatewayError, bad_request, openai_body
from gateway.formats import canonical as c
from providers.pricing import Usage
from providers.specs import ProviderSpec
from thinkwatch.lib import sse

INGRESS = "openai_chat"
WHERE = "the OpenAI Chat Completions API"

FINISH_TO_STOP: dict[str, c.StopReason] = {
    "stop": "end",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "content_filter",
}
STOP_TO_FINISH = {
    "end": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "content_filter": "content_filter",
    "refusal": "content_filter",
}


# --- reading a client's request --------------------------------------------------------


def parse_request(body: bytes) -> dict[str, Any]:
    payload = parse_json_object(body)
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


def parse_json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise bad_request("The request body is empty; send a JSON object.")
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"The request body is not valid JSON: {exc}.", "invalid_json") from None
    if not isinstance(payload, dict):
        raise bad_request("The request body must be a JSON object.", "invalid_json")
    return payload


def _text_parts(content: Any, field: str) -> list[c.Text]:
    if content is None:
        return []
    if isinstance(content, str):
        return [c.Text(content)] if content else []
    if not isinstance(content, list):
        raise bad_request(f"'{field}' must be a string or an array of content parts.")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            parts.append(c.Text(str(part.get(kind) or "")))
        else:
            raise c.Unsupported(f"content part type {kind!r} in {field}", WHERE)
    return parts


def _user_parts(content: Any) -> list[c.Part]:
    if isinstance(content, str) or content is None:
        return list(_text_parts(content, "user content"))
    if not isinstance(content, list):
        raise bad_request("A user message's 'content' must be a string or an array.")
    parts: list[c.Part] = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            parts.append(c.Text(str(part.get("text") or "")))
        elif kind == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            parts.append(image_from_url(str(url)))
        elif kind == "input_audio":
            raise c.Unsupported("audio input", "this gateway's conversion")
        elif kind == "file":
            raise c.Unsupported("file input", "this gateway's conversion")
        else:
            raise bad_request(f"Unknown content part type {kind!r}.")
    return parts


_DATA_URL = re.compile(r"data:(?P<type>[\w/+.-]+);base64,(?P<data>.*)", re.DOTALL)


def image_from_url(url: str) -> c.Image:
    match = _DATA_URL.fullmatch(url)
    if match:
        return c.Image(media_type=match["type"], data=match["data"])
    if not url.startswith(("http://", "https://")):
        raise bad_request("An image must be an http(s) URL or a base64 data: URL.")
    return c.Image(url=url)


def image_to_url(image: c.Image) -> str:
    return image.url or f"data:{image.media_type};base64,{image.data}"


_EXTRAS = ("seed", "presence_penalty", "frequency_penalty")
_UNCONVERTIBLE = {
    "n": "'n' above 1 (several choices)",
    "logprobs": "'logprobs'",
    "top_logprobs": "'top_logprobs'",
    "logit_bias": "'logit_bias'",
    "audio": "audio output",
    "modalities": "'modalities'",
    "prediction": "predicted outputs",
    "web_search_options": "'web_search_options'",
    "functions": "the legacy 'functions' parameter",
    "function_call": "the legacy 'function_call' parameter",
}


def _is_default(name: str, value: Any) -> bool:
    return value in (None, False, [], {}) or (name, value) in (("n", 1), ("modalities", ["text"]))


def decode_request(payload: dict[str, Any]) -> c.Request:
    """A client's chat completion request, for conversion to another provider format."""
    for name, feature in _UNCONVERTIBLE.items():
        if not _is_default(name, payload.get(name)):
            raise c.Unsupported(feature, "providers other than OpenAI")
    system: list[c.Text] = []
    messages: list[c.Message] = []
    names: dict[str, str] = {}
    for message in payload["messages"]:
        if not isinstance(message, dict):
            raise bad_request("Each message must be an object.", "invalid_messages")
        role = message.get("role")
        if role in ("system", "developer"):
            system += _text_parts(message.get("content"), f"{role} content")
        elif role == "user":
            _append(messages, "user", _user_parts(message.get("content")))
        elif role == "assistant":
            _append(messages, "assistant", _assistant_parts(message, names))
        elif role == "tool":
            call_id = str(message.get("tool_call_id") or "")
            content = _text_parts(message.get("content"), "tool content")
            result = c.ToolResult(call_id, names.get(call_id, ""), list(content))
            _append(messages, "user", [result])
        else:
            raise c.Unsupported(f"messages with role {role!r}", "providers other than OpenAI")
    request = c.Request(
        model=payload["model"],
        messages=messages,
        system=system,
        tools=[_tool(t) for t in payload.get("tools") or []],
        tool_choice=_tool_choice(payload.get("tool_choice")),
        parallel_tool_calls=payload.get("parallel_tool_calls"),
        max_tokens=payload.get("max_completion_tokens") or payload.get("max_tokens"),
        temperature=payload.get("temperature"),
        top_p=payload.get("top_p"),
        stop=_stop_list(payload.get("stop")),
        stream=bool(payload.get("stream")),
        output=_output_format(payload.get("response_format")),
        user=payload.get("user"),
    )
    if payload.get("reasoning_effort"):
        request.reasoning = c.Reasoning(effort=str(payload["reasoning_effort"]))
    request.extras = {k: payload[k] for k in _EXTRAS if payload.get(k) not in (None, 0)}
    return request


def _append(messages: list[c.Message], role: c.Role, parts: list[c.Part]) -> None:
    # Consecutive tool results (and a user turn right after them) form one user message.
    last = messages[-1] if messages else None
    joins = (
        last is not None
        and last.role == role == "user"
        and any(isinstance(p, c.ToolResult) for p in last.parts)
    )
    if joins:
        last.parts += parts  # type: ignore[union-attr]
    else:
        messages.append(c.Message(role, parts))


def _assistant_parts(message: dict[str, Any], names: dict[str, str]) -> list[c.Part]:
    parts: list[c.Part] = []
    for block in message.get("thinking_blocks") or []:
        if block.get("type") == "thinking":
            parts.append(
                c.Thinking(str(block.get("thinking") or ""), str(block.get("signature") or ""))
            )
        elif block.get("type") == "redacted_thinking":
            parts.append(c.Thinking(redacted=str(block.get("data") or "")))
    parts += _text_parts(message.get("content"), "assistant content")
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        if call.get("type", "function") != "function":
            raise c.Unsupported(
                f"tool calls of type {call.get('type')!r}", "providers other than OpenAI"
            )
        name = str(function.get("name") or "")
        names[str(call.get("id"))] = name
        parts.append(
            c.ToolCall(str(call.get("id") or ""), name, str(function.get("arguments") or "{}"))
        )
    return parts


def _tool(tool: dict[str, Any]) -> c.Tool:
    if tool.get("type") != "function":
        raise c.Unsupported(f"tools of type {tool.get('type')!r}", "providers other than OpenAI")
    function = tool.get("function") or {}
    return c.Tool(
        name=str(function.get("name") or ""),
        description=str(function.get("description") or ""),
        parameters=function.get("parameters") or {"type": "object", "properties": {}},
        strict=function.get("strict"),
    )


def _tool_choice(choice: Any) -> c.ToolChoice | None:
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return c.ToolChoice(choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        return c.ToolChoice("tool", str((choice.get("function") or {}).get("name") or ""))
    raise bad_request(f"Unsupported 'tool_choice' {choice!r}.")


def _stop_list(stop: Any) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else [str(s) for s in stop]


def _output_format(fmt: Any) -> c.OutputFormat | None:
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return c.OutputFormat("json_object")
    if fmt["type"] == "json_schema":
        spec = fmt.get("json_schema") or {}
        return c.OutputFormat(
            "json_schema", str(spec.get("name") or "output"), spec.get("schema"), spec.get("strict")
        )
    raise bad_request(f"Unsupported 'response_format' type {fmt['type']!r}.")


# --- writing a request for an OpenAI-format provider ---------------------------------


def encode_request(request: c.Request, model: str, spec: ProviderSpec) -> dict[str, Any]:
    where = f"{spec.label} providers"
    body: dict[str, Any] = {"model": model, "messages": _encode_messages(request, where)}
    if request.tools:
        body["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": t.name,
                    "description": t.description,
                    "parameters": t.parameters,
                    **({"strict": t.strict} if t.strict is not None else {}),
                },
            }
            for t in request.tools
        ]
    if request.tool_choice:
        choice = request.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice.name}}
            if choice.mode == "tool"
            else choice.mode
        )
    if request.parallel_tool_calls is not None and request.tools:
        body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.max_tokens is not None:
        body[spec.max_tokens_field] = request.max_tokens
    for name in ("temperature", "top_p"):
        if getattr(request, name) is not None:
            body[name] = getattr(request, name)
    if request.top_k is not None:
        _require("top_k", spec, where)
        body["top_k"] = request.top_k
    if request.stop:
        body["stop"] = request.stop
    if request.output:
        body["response_format"] = _encode_output(request.output)
    if request.reasoning:
        _require("reasoning_effort", spec, where)
        body["reasoning_effort"] = request.reasoning.effort or _effort(
            request.reasoning.budget_tokens
        )
    for name, value in request.extras.items():
        _require(name, spec, where)
        body[name] = value
    if request.user:
        body["user"] = request.user
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _require(name: str, spec: ProviderSpec, where: str) -> None:
    if name not in spec.chat_extras:
        raise c.Unsupported(f"'{name}'", where)


def _effort(budget: int | None) -> str:
    if budget is None:
        return "medium"
    return "low" if budget < 4096 else "medium" if budget < 16384 else "high"


def _encode_output(output: c.OutputFormat) -> dict[str, Any]:
    if output.kind == "json_object":
        return {"type": "json_object"}
    schema: dict[str, Any] = {"name": output.name or "output", "schema": output.schema or {}}
    if output.strict is not None:
        schema["strict"] = output.strict
    return {"type": "json_schema", "json_schema": schema}


def _encode_messages(request: c.Request, where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": c.text_of(list(request.system))})
    for message in request.messages:
        if message.role == "assistant":
            out.append(_encode_assistant(message))
            continue
        for part in message.parts:
            if isinstance(part, c.ToolResult):
                if any(isinstance(x, c.Image) for x in part.content):
                    raise c.Unsupported("images in tool results", where)
                text = c.text_of(list(part.content))
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": part.call_id,
                        "content": _error_text(part, text),
                    }
                )
        content = [_encode_user_part(p) for p in message.parts if not isinstance(p, c.ToolResult)]
        if content:
            only_text = len(content) == 1 and content[0]["type"] == "text"
            out.append({"role": "user", "content": content[0]["text"] if only_text else content})
    return out


def _error_text(result: c.ToolResult, text: str) -> str:
    return f"Error: {text}" if result.is_error and not text.startswith("Error") else text


def _encode_user_part(part: c.Part) -> dict[str, Any]:
    if isinstance(part, c.Text):
        return {"type": "text", "text": part.text}
    if isinstance(part, c.Image):
        return {"type": "image_url", "image_url": {"url": image_to_url(part)}}
    raise bad_request(f"A user message cannot carry {type(part).__name__} content.")


def _encode_assistant(message: c.Message) -> dict[str, Any]:
    text = c.text_of(message.parts)
    calls = [p for p in message.parts if isinstance(p, c.ToolCall)]
    out: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in calls
        ]
    return out


# --- reading an OpenAI-format provider's answer ------------------------------------


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


def decode_response(payload: dict[str, Any]) -> c.Response:
    choice = (payload.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    parts: list[c.Part] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if reasoning:
        parts.append(c.Thinking(str(reasoning)))
    if message.get("content"):
        parts.append(c.Text(str(message["content"])))
    if message.get("refusal"):
        parts.append(c.Text(str(message["refusal"])))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        parts.append(
            c.ToolCall(
                str(call.get("id") or ""),
                str(function.get("name") or ""),
                str(function.get("arguments") or "{}"),
            )
        )
    stop = FINISH_TO_STOP.get(choice.get("finish_reason") or "stop", "end")
    if message.get("refusal"):
        stop = "refusal"
    return c.Response(
        id=str(payload.get("id") or ""),
        model=str(payload.get("model") or ""),
        parts=parts,
        stop=stop,
        usage=usage_of(payload.get("usage")) or Usage(),
    )


class StreamDecoder:
    """An OpenAI-format chat stream as canonical events."""

    content_type = "text/event-stream"

    def __init__(self) -> None:
        self._splitter = sse.EventSplitter()
        self._blocks = c.Blocks()
        self._started = False
        self._stop: c.StopReason | None = None

    def feed(self, chunk: bytes) -> list[c.Event]:
        events: list[c.Event] = []
        for event in self._splitter.feed(chunk):
            data = sse.data_of(event)
            if not data or data == b"[DONE]":
                continue
            events += self._decode(orjson.loads(data))
        return events

    def _decode(self, chunk: dict[str, Any]) -> list[c.Event]:
        if "error" in chunk:
            error = chunk["error"]
            raise UpstreamStreamError(
                str(error.get("message") if isinstance(error, dict) else error)
            )
        events: list[c.Event] = []
        if not self._started:
            self._started = True
            events.append(c.Start(str(chunk.get("id") or ""), str(chunk.get("model") or "")))
        blocks = self._blocks
        for choice in chunk.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning:
                events += blocks.delta("thinking", "thinking", str(reasoning))
            if delta.get("content"):
                events += blocks.delta("text", "text", str(delta["content"]))
            for call in delta.get("tool_calls") or []:
                key = ("tool", call.get("index", 0))
                function = call.get("function") or {}
                if blocks.get(key) is None:
                    events += blocks.start(
                        key, "tool_call", str(call.get("id") or ""), str(function.get("name") or "")
                    )
                if function.get("arguments"):
                    events.append(c.Delta(blocks.get(key), str(function["arguments"])))  # type: ignore[arg-type]
            if choice.get("finish_reason"):
                self._stop = FINISH_TO_STOP.get(choice["finish_reason"], "end")
        usage = usage_of(chunk.get("usage"))
        if usage is not None:
            events.append(c.UsageReport(usage))
        return events

    def close(self) -> list[c.Event]:
        return [*self._blocks.close_all(), c.Stop(self._stop or "end")]


class UpstreamStreamError(Exception):
    """The provider reported an error inside a stream."""


# --- writing the answer for a Chat Completions client ---------------------------------


def _usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input,
        "completion_tokens": usage.output,
        "total_tokens": usage.input + usage.output,
        "prompt_tokens_details": {"cached_tokens": usage.cached},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning},
    }


def encode_response(response: c.Response, model: str) -> dict[str, Any]:
    text = c.text_of(response.parts)
    calls = [p for p in response.parts if isinstance(p, c.ToolCall)]
    thoughts = [p for p in response.parts if isinstance(p, c.Thinking)]
    message: dict[str, Any] = {"role": "assistant", "content": text or None, "refusal": None}
    if calls:
        message["tool_calls"] = [
            {"id": p.id, "type": "function", "function": {"name": p.name, "arguments": p.arguments}}
            for p in calls
        ]
    if thoughts:
        message["reasoning_content"] = "".join(t.text for t in thoughts)
        message["thinking_blocks"] = [_thinking_block(t) for t in thoughts]
    return {
        "id": _chat_id(response.id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": STOP_TO_FINISH[response.stop],
            }
        ],
        "usage": _usage_body(response.usage),
    }


def _thinking_block(thought: c.Thinking) -> dict[str, Any]:
    if thought.redacted:
        return {"type": "redacted_thinking", "data": thought.redacted}
    return {"type": "thinking", "thinking": thought.text, "signature": thought.signature}


def _chat_id(upstream_id: str) -> str:
    return (
        upstream_id
        if upstream_id.startswith("chatcmpl")
        else f"chatcmpl-{upstream_id or time.time_ns()}"
    )


class StreamEncoder:
    """Canonical events as `chat.completion.chunk`s, ending with `data: [DONE]`."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = ""
        self.created = int(time.time())
        self._tools: dict[int, int] = {}  # block index -> tool_calls index
        self._kinds: dict[int, c.BlockKind] = {}
        self._thinking: dict[int, str] = {}
        self._stop: c.StopReason = "end"
        self._usage = Usage()

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        chunk: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.include_usage:
            chunk["usage"] = None
        return sse.encode(orjson.dumps(chunk))

    def feed(self, events: list[c.Event]) -> bytes:
        out = []
        for event in events:
            if isinstance(event, c.Start):
                self.id = _chat_id(event.id)
                out.append(self._chunk({"role": "assistant", "content": ""}))
            elif isinstance(event, c.BlockStart):
                self._kinds[event.index] = event.kind
                if event.kind == "tool_call":
                    slot = self._tools[event.index] = len(self._tools)
                    out.append(
                        self._chunk(
                            {
                                "tool_calls": [
                                    {
                                        "index": slot,
                                        "id": event.call_id,
                                        "type": "function",
                                        "function": {"name": event.name, "arguments": ""},
                                    }
                                ]
                            }
                        )
                    )
            elif isinstance(event, c.Delta):
                out.append(self._chunk(self._delta(event)))
            elif isinstance(event, c.SignatureDelta):
                block = {
                    "type": "thinking",
                    "thinking": self._thinking.get(event.index, ""),
                    "signature": event.signature,
                }
                out.append(self._chunk({"thinking_blocks": [block]}))
            elif isinstance(event, c.Stop):
                self._stop = event.reason
            elif isinstance(event, c.UsageReport):
                self._usage = event.usage
        return b"".join(out)

    def _delta(self, event: c.Delta) -> dict[str, Any]:
        kind = self._kinds.get(event.index, "text")
        if kind == "tool_call":
            return {
                "tool_calls": [
                    {"index": self._tools[event.index], "function": {"arguments": event.text}}
                ]
            }
        if kind == "thinking":
            self._thinking[event.index] = self._thinking.get(event.index, "") + event.text
            return {"reasoning_content": event.text}
        return {"content": event.text}

    def close(self) -> bytes:
        out = [self._chunk({}, STOP_TO_FINISH[self._stop])]
        if self.include_usage:
            usage = {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": _usage_body(self._usage),
            }
            out.append(sse.encode(orjson.dumps(usage)))
        out.append(b"data: [DONE]\n\n")
        return b"".join(out)


def error_event(error: GatewayError) -> bytes:
    return sse.encode(orjson.dumps(openai_body(error)))


# --- passing same-format traffic through ---------------------------------------------


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


@lru_cache(maxsize=1024)
def _model_field(name: str) -> re.Pattern[bytes]:
    return re.compile(rb'("model"\s*:\s*")' + re.escape(orjson.dumps(name)[1:-1]) + rb'"')


def rename_model(data: bytes, upstream_model: str, asked: str) -> bytes:
    """Show the client the model name it asked for instead of the provider's alias.

    Only the first top-level field can match: inside message text a quote is escaped.
    """
    replacement = rb"\g<1>" + orjson.dumps(asked)[1:-1].replace(b"\\", b"\\\\") + b'"'
    return _model_field(upstream_model).sub(replacement, data, count=1)


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


def arguments_json(arguments: str) -> Any:
    """Tool-call arguments as a JSON value, for providers that want an object."""
    try:
        return json.loads(arguments or "{}")
    except ValueError:
        raise bad_request(
            "A tool call's arguments are not valid JSON; the provider needs an object.",
            "invalid_tool_arguments",
        ) from None
