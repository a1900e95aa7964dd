"""OpenAI Responses on the wire, as clients send it. Stateless: nothing is stored, so
`previous_response_id` and stored items are refused with a clear error; `store` is ignored.

To OpenAI itself the request passes through; to every other provider it is converted."""

import time
from typing import Any

import orjson

from gateway.errors import GatewayError, bad_request
from gateway.formats import canonical as c
from gateway.formats.openai_chat import (
    estimate_input_tokens,
    image_from_url,
    image_to_url,
    parse_json_object,
    rename_model,
)
from providers.pricing import Usage
from thinkwatch.lib import sse

INGRESS = "openai_responses"
WHERE = "providers other than OpenAI"


def parse_request(body: bytes) -> dict[str, Any]:
    payload = parse_json_object(body)
    if not isinstance(payload.get("model"), str) or not payload["model"].strip():
        raise bad_request("'model' is required and must be a non-empty string.", "missing_model")
    if payload.get("previous_response_id"):
        raise bad_request(
            "'previous_response_id' needs stored responses, which this gateway does not keep; "
            "send the whole conversation in 'input' instead.",
            "unsupported_feature",
        )
    if payload.get("background"):
        raise bad_request(
            "Background responses are not supported by this gateway.", "unsupported_feature"
        )
    if not isinstance(payload.get("input"), str | list):
        raise bad_request(
            "'input' is required: a string or an array of input items.", "invalid_input"
        )
    if not isinstance(payload.get("stream", False), bool | None):
        raise bad_request("'stream' must be true or false.", "invalid_stream")
    return payload


# --- reading a client's request --------------------------------------------------------


def _content(content: Any, role: str) -> list[c.Part]:
    if isinstance(content, str):
        return [c.Text(content)] if content else []
    parts: list[c.Part] = []
    for part in content or []:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append(c.Text(str(part.get("text") or "")))
        elif kind == "refusal":
            parts.append(c.Text(str(part.get("refusal") or "")))
        elif kind == "input_image":
            if part.get("file_id"):
                raise c.Unsupported("images by file_id", WHERE)
            parts.append(image_from_url(str(part.get("image_url") or "")))
        else:
            raise c.Unsupported(f"input content of type {kind!r}", WHERE)
    return parts


def _output_content(output: Any) -> list[c.Text | c.Image]:
    if isinstance(output, str):
        return [c.Text(output)]
    parts: list[c.Text | c.Image] = []
    for part in output or []:
        if part.get("type") in ("input_text", "output_text"):
            parts.append(c.Text(str(part.get("text") or "")))
        elif part.get("type") == "input_image":
            parts.append(image_from_url(str(part.get("image_url") or "")))
        else:
            raise c.Unsupported(f"function_call_output content of type {part.get('type')!r}", WHERE)
    return parts


def _add(messages: list[c.Message], role: c.Role, parts: list[c.Part]) -> None:
    if messages and messages[-1].role == role:
        messages[-1].parts += parts
    else:
        messages.append(c.Message(role, parts))


def decode_request(payload: dict[str, Any]) -> c.Request:
    system: list[c.Text] = []
    if payload.get("instructions"):
        system.append(c.Text(str(payload["instructions"])))
    messages: list[c.Message] = []
    names: dict[str, str] = {}
    items = payload["input"]
    if isinstance(items, str):
        items = [{"role": "user", "content": items}]
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                system += [p for p in _content(item.get("content"), role) if isinstance(p, c.Text)]
            else:
                _add(
                    messages,
                    "assistant" if role == "assistant" else "user",
                    _content(item.get("content"), str(role)),
                )
        elif kind == "function_call":
            names[str(item.get("call_id"))] = str(item.get("name") or "")
            call = c.ToolCall(
                str(item.get("call_id") or ""),
                str(item.get("name") or ""),
                str(item.get("arguments") or "{}"),
            )
            _add(messages, "assistant", [call])
        elif kind == "function_call_output":
            call_id = str(item.get("call_id") or "")
            result = c.ToolResult(
                call_id, names.get(call_id, ""), _output_content(item.get("output"))
            )
            _add(messages, "user", [result])
        elif kind == "reasoning":
            summary = "".join(str(s.get("text") or "") for s in item.get("summary") or [])
            _add(
                messages,
                "assistant",
                [c.Thinking(summary, str(item.get("encrypted_content") or ""))],
            )
        elif kind == "item_reference":
            raise c.Unsupported("item references (stored items)", "this stateless gateway")
        else:
            raise c.Unsupported(f"input items of type {kind!r}", WHERE)
    request = c.Request(
        model=payload["model"],
        messages=messages,
        system=system,
        tools=[_tool(t) for t in payload.get("tools") or []],
        tool_choice=_tool_choice(payload.get("tool_choice")),
        parallel_tool_calls=payload.get("parallel_tool_calls"),
        max_tokens=payload.get("max_output_tokens"),
        temperature=payload.get("temperature"),
        top_p=payload.get("top_p"),
        stream=bool(payload.get("stream")),
        output=_output_format((payload.get("text") or {}).get("format")),
        user=payload.get("user"),
    )
    reasoning = payload.get("reasoning") or {}
    if reasoning.get("effort") or reasoning.get("summary"):
        request.reasoning = c.Reasoning(
            effort=str(reasoning.get("effort") or ""), summary=bool(reasoning.get("summary"))
        )
    return request


def _tool(tool: dict[str, Any]) -> c.Tool:
    if tool.get("type") != "function":
        raise c.Unsupported(f"the built-in tool {tool.get('type')!r}", WHERE)
    return c.Tool(
        name=str(tool.get("name") or ""),
        description=str(tool.get("description") or ""),
        parameters=tool.get("parameters") or {"type": "object", "properties": {}},
        strict=tool.get("strict"),
    )


def _tool_choice(choice: Any) -> c.ToolChoice | None:
    if choice is None:
        return None
    if choice in ("auto", "none", "required"):
        return c.ToolChoice(choice)
    if isinstance(choice, dict) and choice.get("type") == "function":
        return c.ToolChoice("tool", str(choice.get("name") or ""))
    raise c.Unsupported(f"'tool_choice' {choice!r}", WHERE)


def _output_format(fmt: Any) -> c.OutputFormat | None:
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return None
    if fmt["type"] == "json_object":
        return c.OutputFormat("json_object")
    if fmt["type"] == "json_schema":
        return c.OutputFormat(
            "json_schema", str(fmt.get("name") or "output"), fmt.get("schema"), fmt.get("strict")
        )
    raise bad_request(f"Unsupported text.format type {fmt['type']!r}.")


# --- writing the answer for a Responses client -------------------------------------


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input,
        "input_tokens_details": {"cached_tokens": usage.cached},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning},
        "total_tokens": usage.input + usage.output,
    }


def usage_of(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    return Usage(
        input=usage.get("input_tokens") or 0,
        output=usage.get("output_tokens") or 0,
        cached=(usage.get("input_tokens_details") or {}).get("cached_tokens") or 0,
        reasoning=(usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def _response_id(upstream_id: str) -> str:
    return (
        upstream_id if upstream_id.startswith("resp_") else f"resp_{upstream_id or time.time_ns()}"
    )


def _reasoning_item(item_id: str, thought: c.Thinking) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": item_id,
        "type": "reasoning",
        "summary": [{"type": "summary_text", "text": thought.text}],
    }
    if thought.signature:
        item["encrypted_content"] = thought.signature  # comes back as-is in the next turn's input
    return item


def _message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = (
        [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]
        if text or status == "completed"
        else []
    )
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": content,
    }


def _call_item(item_id: str, call: c.ToolCall, status: str = "completed") -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "call_id": call.id,
        "name": call.name,
        "arguments": call.arguments,
    }


def _envelope(
    response_id: str,
    model: str,
    status: str,
    output: list[dict[str, Any]],
    usage: Usage | None,
    stop: c.StopReason,
) -> dict[str, Any]:
    incomplete = status == "incomplete"
    reason = "max_output_tokens" if stop == "max_tokens" else "content_filter"
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": status,
        "error": None,
        "incomplete_details": {"reason": reason} if incomplete else None,
        "instructions": None,
        "max_output_tokens": None,
        "model": model,
        "output": output,
        "parallel_tool_calls": True,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "store": False,
        "temperature": None,
        "text": {"format": {"type": "text"}},
        "tool_choice": "auto",
        "tools": [],
        "top_p": None,
        "truncation": "disabled",
        "usage": usage_body(usage) if usage is not None else None,
        "metadata": {},
    }


def _status(stop: c.StopReason) -> str:
    return "incomplete" if stop in ("max_tokens", "content_filter") else "completed"


def encode_response(response: c.Response, model: str) -> dict[str, Any]:
    output: list[dict[str, Any]] = []
    text = c.text_of(response.parts)
    for n, part in enumerate(response.parts):
        if isinstance(part, c.Thinking) and not part.redacted:
            output.append(_reasoning_item(f"rs_{n}", part))
        elif isinstance(part, c.ToolCall):
            output.append(_call_item(f"fc_{part.id}", part))
    if text:
        output.insert(
            len([o for o in output if o["type"] == "reasoning"]), _message_item("msg_0", text)
        )
    rid = _response_id(response.id)
    return _envelope(rid, model, _status(response.stop), output, response.usage, response.stop)


class StreamEncoder:
    """Canonical events as `response.*` events, ending with `response.completed`."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.id = ""
        self._seq = 0
        self._items: dict[int, dict[str, Any]] = {}  # canonical block -> output item
        self._output_index: dict[int, int] = {}
        self._text: dict[int, str] = {}
        self._kinds: dict[int, c.BlockKind] = {}
        self._open: set[int] = set()
        self._stop: c.StopReason = "end"
        self._usage = Usage()
        self._started = False

    def _event(self, name: str, data: dict[str, Any]) -> bytes:
        payload = {"type": name, "sequence_number": self._seq, **data}
        self._seq += 1
        return sse.encode(orjson.dumps(payload), name)

    def _begin(self, upstream_id: str) -> bytes:
        self._started = True
        self.id = _response_id(upstream_id)
        snapshot = _envelope(self.id, self.model, "in_progress", [], None, "end")
        return self._event("response.created", {"response": snapshot}) + self._event(
            "response.in_progress", {"response": snapshot}
        )

    def feed(self, events: list[c.Event]) -> bytes:
        out = []
        for event in events:
            if isinstance(event, c.Start):
                out.append(self._begin(event.id))
            elif isinstance(event, c.BlockStart):
                out.append(self._open_block(event))
            elif isinstance(event, c.Delta) and event.index in self._open:
                out.append(self._delta(event))
            elif isinstance(event, c.SignatureDelta) and event.index in self._items:
                self._items[event.index]["encrypted_content"] = event.signature
            elif isinstance(event, c.BlockStop) and event.index in self._open:
                out.append(self._close_block(event.index))
            elif isinstance(event, c.Stop):
                self._stop = event.reason
            elif isinstance(event, c.UsageReport):
                self._usage = event.usage
        return b"".join(out)

    def _open_block(self, event: c.BlockStart) -> bytes:
        head = b"" if self._started else self._begin("")
        index = event.index
        self._kinds[index] = event.kind
        self._text[index] = ""
        self._open.add(index)
        self._output_index[index] = output_index = len(self._output_index)
        if event.kind == "tool_call":
            item = _call_item(
                f"fc_{event.call_id}", c.ToolCall(event.call_id, event.name, ""), "in_progress"
            )
        elif event.kind == "thinking":
            item = {"id": f"rs_{index}", "type": "reasoning", "summary": []}
        else:
            item = _message_item(f"msg_{index}", "", "in_progress")
        self._items[index] = item
        out = head + self._event(
            "response.output_item.added", {"output_index": output_index, "item": item}
        )
        where = {"item_id": item["id"], "output_index": output_index}
        if event.kind == "text":
            part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            out += self._event(
                "response.content_part.added", {**where, "content_index": 0, "part": part}
            )
        elif event.kind == "thinking":
            part = {"type": "summary_text", "text": ""}
            out += self._event(
                "response.reasoning_summary_part.added", {**where, "summary_index": 0, "part": part}
            )
        return out

    def _delta(self, event: c.Delta) -> bytes:
        index = event.index
        self._text[index] += event.text
        where = {"item_id": self._items[index]["id"], "output_index": self._output_index[index]}
        kind = self._kinds[index]
        if kind == "tool_call":
            return self._event(
                "response.function_call_arguments.delta", {**where, "delta": event.text}
            )
        if kind == "thinking":
            return self._event(
                "response.reasoning_summary_text.delta",
                {**where, "summary_index": 0, "delta": event.text},
            )
        return self._event(
            "response.output_text.delta",
            {**where, "content_index": 0, "delta": event.text, "logprobs": []},
        )

    def _close_block(self, index: int) -> bytes:
        self._open.discard(index)
        item, text, kind = self._items[index], self._text[index], self._kinds[index]
        where = {"item_id": item["id"], "output_index": self._output_index[index]}
        out = b""
        if kind == "tool_call":
            item["arguments"] = text or "{}"
            out += self._event(
                "response.function_call_arguments.done", {**where, "arguments": item["arguments"]}
            )
        elif kind == "thinking":
            part: dict[str, Any] = {"type": "summary_text", "text": text}
            item["summary"] = [part]
            out += self._event(
                "response.reasoning_summary_text.done", {**where, "summary_index": 0, "text": text}
            )
            out += self._event(
                "response.reasoning_summary_part.done", {**where, "summary_index": 0, "part": part}
            )
        else:
            part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
            item["content"] = [part]  # the finished item carries its text
            out += self._event(
                "response.output_text.done",
                {**where, "content_index": 0, "text": text, "logprobs": []},
            )
            out += self._event(
                "response.content_part.done", {**where, "content_index": 0, "part": part}
            )
        if "status" in item:
            item["status"] = "completed"
        return out + self._event(
            "response.output_item.done", {"output_index": where["output_index"], "item": item}
        )

    def close(self) -> bytes:
        out = [b"" if self._started else self._begin("")]
        out += [self._close_block(index) for index in sorted(self._open)]
        output = [self._items[i] for i in sorted(self._items, key=self._output_index.__getitem__)]
        status = _status(self._stop)
        final = _envelope(self.id, self.model, status, output, self._usage, self._stop)
        out.append(
            self._event(
                "response.completed" if status == "completed" else "response.incomplete",
                {"response": final},
            )
        )
        return b"".join(out)


def error_event(error: GatewayError) -> bytes:
    body = {
        "type": "error",
        "code": error.code,
        "message": error.message,
        "param": None,
        "sequence_number": 0,
    }
    return sse.encode(orjson.dumps(body), "error")


# --- passing same-format traffic through (to OpenAI) ---------------------------------


def upstream_body(
    payload: dict[str, Any], raw: bytes, upstream_model: str, ask_usage: bool
) -> tuple[bytes, bool]:
    if payload["model"] == upstream_model:
        return raw, False
    return orjson.dumps({**payload, "model": upstream_model}), False


class StreamScan:
    """Reads a Responses stream for accounting while it passes through: the usage comes
    with `response.completed` (or `.incomplete` / `.failed`)."""

    __slots__ = ("asked", "deltas", "error", "estimated_input", "upstream_model", "usage")

    def __init__(self, added_usage: bool, upstream_model: str, asked: str, body: bytes) -> None:
        self.estimated_input = estimate_input_tokens(body)
        self.upstream_model = upstream_model if upstream_model != asked else None
        self.asked = asked
        self.usage: Usage | None = None
        self.error: str | None = None
        self.deltas = 0

    def forward(self, events: list[bytes]) -> bytes:
        out = []
        for event in events:
            if b".delta" in event[:64]:
                self.deltas += 1
            elif (
                b'"usage":{' in event
                or b"event: error" in event
                or b"response.failed" in event[:64]
            ):
                self._inspect(event)
            if self.upstream_model is not None and b'"response":{' in event:
                event = rename_model(event, self.upstream_model, self.asked)
            out.append(event)
        return b"".join(out)

    def _inspect(self, event: bytes) -> None:
        try:
            data = orjson.loads(sse.data_of(event))
        except orjson.JSONDecodeError:
            return
        response = data.get("response") or {}
        usage = usage_of(response.get("usage"))
        if usage is not None:
            self.usage = usage
        error = (
            data.get("message")
            if data.get("type") == "error"
            else (response.get("error") or {}).get("message")
        )
        if error:
            self.error = str(error)[:500]


def image_url(image: c.Image) -> str:
    return image_to_url(image)
