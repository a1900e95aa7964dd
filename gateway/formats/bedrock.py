"""AWS Bedrock Runtime on the wire, as a provider: Converse, ConverseStream (the AWS
event stream, decoded with botocore's parser) and InvokeModel for embedding models."""

from typing import Any

import orjson
from botocore.eventstream import EventStreamBuffer

from gateway.formats import canonical as c
from gateway.formats.openai_chat import UpstreamStreamError, arguments_json
from providers.pricing import Usage
from providers.specs import ProviderSpec

WHERE = "AWS Bedrock"
DEFAULT_MAX_TOKENS = 4096
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 24576}

STOP_FROM: dict[str, c.StopReason] = {
    "end_turn": "end",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "stop_sequence": "stop_sequence",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}


def encode_request(request: c.Request, model: str, spec: ProviderSpec) -> dict[str, Any]:
    if request.output:
        raise c.Unsupported("JSON output ('response_format')", WHERE)
    if request.extras:
        raise c.Unsupported(f"'{next(iter(request.extras))}'", WHERE)
    body: dict[str, Any] = {"messages": encode_messages(request.messages)}
    if request.system:
        body["system"] = [{"text": t.text} for t in request.system if t.text]
    inference: dict[str, Any] = {}
    for ours, theirs in (
        ("max_tokens", "maxTokens"),
        ("temperature", "temperature"),
        ("top_p", "topP"),
    ):
        if getattr(request, ours) is not None:
            inference[theirs] = getattr(request, ours)
    if request.stop:
        inference["stopSequences"] = request.stop
    additional: dict[str, Any] = {}
    if request.top_k is not None:
        additional["top_k"] = request.top_k
    if request.reasoning:
        budget = request.reasoning.budget_tokens or _EFFORT_BUDGET.get(
            request.reasoning.effort, 8192
        )
        additional["thinking"] = {"type": "enabled", "budget_tokens": budget}
        inference["maxTokens"] = max(inference.get("maxTokens") or 0, budget + DEFAULT_MAX_TOKENS)
        inference.pop("temperature", None)
    if inference:
        body["inferenceConfig"] = inference
    if additional:
        body["additionalModelRequestFields"] = additional
    if request.tools:
        body["toolConfig"] = _tool_config(request)
    elif request.tool_choice and request.tool_choice.mode not in ("auto", "none"):
        raise c.Unsupported("'tool_choice' without tools", WHERE)
    return body


def _tool_config(request: c.Request) -> dict[str, Any]:
    config: dict[str, Any] = {
        "tools": [
            {
                "toolSpec": {
                    "name": t.name,
                    "description": t.description or t.name,
                    "inputSchema": {"json": t.parameters},
                }
            }
            for t in request.tools
        ]
    }
    choice = request.tool_choice
    if choice is not None and choice.mode == "none":
        raise c.Unsupported("'tool_choice' none (Converse has no way to forbid tool use)", WHERE)
    if choice is not None and choice.mode == "required":
        config["toolChoice"] = {"any": {}}
    elif choice is not None and choice.mode == "tool":
        config["toolChoice"] = {"tool": {"name": choice.name}}
    return config


def encode_messages(messages: list[c.Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for message in messages:
        content = [b for b in (_encode_part(p) for p in message.parts) if b is not None]
        if not content:
            continue
        if out and out[-1]["role"] == message.role:
            out[-1]["content"] += content  # Converse requires turns to alternate
        else:
            out.append({"role": message.role, "content": content})
    return out


def _image(image: c.Image) -> dict[str, Any]:
    if image.url:
        raise c.Unsupported("images given by URL (send them as base64 data)", WHERE)
    fmt = _IMAGE_FORMATS.get(image.media_type.lower())
    if fmt is None:
        raise c.Unsupported(f"images of type {image.media_type!r}", WHERE)
    return {"image": {"format": fmt, "source": {"bytes": image.data}}}


def _encode_part(part: c.Part) -> dict[str, Any] | None:
    if isinstance(part, c.Text):
        return {"text": part.text} if part.text else None
    if isinstance(part, c.Image):
        return _image(part)
    if isinstance(part, c.ToolCall):
        return {
            "toolUse": {
                "toolUseId": part.id,
                "name": part.name,
                "input": arguments_json(part.arguments),
            }
        }
    if isinstance(part, c.ToolResult):
        content = [
            {"text": x.text} if isinstance(x, c.Text) else _image(x) for x in part.content
        ] or [{"text": ""}]
        return {
            "toolResult": {
                "toolUseId": part.call_id,
                "content": content,
                "status": "error" if part.is_error else "success",
            }
        }
    if part.redacted:
        return {"reasoningContent": {"redactedContent": part.redacted}}
    if part.signature:
        return {
            "reasoningContent": {"reasoningText": {"text": part.text, "signature": part.signature}}
        }
    return None  # reasoning without a signature cannot be verified by the model


def usage_of(usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None
    cached = usage.get("cacheReadInputTokens") or 0
    written = usage.get("cacheWriteInputTokens") or 0
    return Usage(
        input=(usage.get("inputTokens") or 0) + cached + written,
        output=usage.get("outputTokens") or 0,
        cached=cached,
    )


def _parts(content: list[dict[str, Any]]) -> list[c.Part]:
    parts: list[c.Part] = []
    for block in content:
        if "text" in block:
            parts.append(c.Text(str(block["text"])))
        elif "toolUse" in block:
            use = block["toolUse"]
            parts.append(
                c.ToolCall(
                    str(use.get("toolUseId")),
                    str(use.get("name")),
                    orjson.dumps(use.get("input") or {}).decode(),
                )
            )
        elif "reasoningContent" in block:
            reasoning = block["reasoningContent"]
            if "redactedContent" in reasoning:
                parts.append(c.Thinking(redacted=str(reasoning["redactedContent"])))
            else:
                text = reasoning.get("reasoningText") or {}
                parts.append(
                    c.Thinking(str(text.get("text") or ""), str(text.get("signature") or ""))
                )
    return parts


def decode_response(payload: dict[str, Any]) -> c.Response:
    message = (payload.get("output") or {}).get("message") or {}
    return c.Response(
        id="",
        model="",
        parts=_parts(message.get("content") or []),
        stop=STOP_FROM.get(str(payload.get("stopReason")), "end"),
        usage=usage_of(payload.get("usage")) or Usage(),
    )


class StreamDecoder:
    """A ConverseStream event stream as canonical events."""

    content_type = "application/vnd.amazon.eventstream"

    def __init__(self) -> None:
        self._buffer = EventStreamBuffer()
        self._blocks = c.Blocks()
        self._started = False

    def feed(self, chunk: bytes) -> list[c.Event]:
        self._buffer.add_data(chunk)
        events: list[c.Event] = []
        for message in self._buffer:
            headers = message.headers
            if headers.get(":message-type") != "event":
                detail = (
                    orjson.loads(message.payload or b"{}").get("message")
                    if message.payload
                    else None
                )
                raise UpstreamStreamError(
                    f"{headers.get(':exception-type') or 'error'}: {detail or 'stream error'}"
                )
            events += self._decode(
                str(headers.get(":event-type")), orjson.loads(message.payload or b"{}")
            )
        return events

    def _decode(self, kind: str, data: dict[str, Any]) -> list[c.Event]:
        blocks = self._blocks
        events: list[c.Event] = []
        if not self._started:
            self._started = True
            events.append(c.Start("", ""))
        if kind == "contentBlockStart":
            use = (data.get("start") or {}).get("toolUse")
            if use:
                events += blocks.start(
                    data.get("contentBlockIndex"),
                    "tool_call",
                    str(use.get("toolUseId")),
                    str(use.get("name")),
                )
        elif kind == "contentBlockDelta":
            key, delta = data.get("contentBlockIndex"), data.get("delta") or {}
            if "text" in delta:
                events += blocks.delta(key, "text", str(delta["text"]))
            elif "toolUse" in delta:
                events += blocks.delta(
                    key, "tool_call", str((delta["toolUse"] or {}).get("input") or "")
                )
            elif "reasoningContent" in delta:
                reasoning = delta["reasoningContent"]
                if reasoning.get("text"):
                    events += blocks.delta(key, "thinking", str(reasoning["text"]))
                if reasoning.get("signature") and blocks.get(key) is not None:
                    events.append(c.SignatureDelta(blocks.get(key), str(reasoning["signature"])))  # type: ignore[arg-type]
        elif kind == "contentBlockStop":
            index = blocks.get(data.get("contentBlockIndex"))
            if index is not None and index in blocks.open:
                blocks.open.remove(index)
                events.append(c.BlockStop(index))
        elif kind == "messageStop":
            events.append(c.Stop(STOP_FROM.get(str(data.get("stopReason")), "end")))
        elif kind == "metadata":
            usage = usage_of(data.get("usage"))
            if usage is not None:
                events.append(c.UsageReport(usage))
        return events

    def close(self) -> list[c.Event]:
        return self._blocks.close_all()


# --- embeddings (InvokeModel) -----------------------------------------------------------


def embedding_dialect(model: str) -> str:
    bare = model.split("/")[-1].split(".", 1)[-1] if "." in model else model
    if "titan-embed" in bare:
        return "titan"
    if "cohere.embed" in model or bare.startswith("embed-"):
        return "cohere"
    raise c.Unsupported(
        f"embeddings with the model {model!r} (Titan and Cohere embed models are)", WHERE
    )


def encode_titan(text: str, dimensions: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"inputText": text}
    if dimensions:
        body["dimensions"] = dimensions
    return body


def encode_cohere(texts: list[str]) -> dict[str, Any]:
    return {"texts": texts, "input_type": "search_document"}
