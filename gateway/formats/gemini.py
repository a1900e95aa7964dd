"""Google Gemini (generativelanguage v1beta) on the wire, as a provider: generateContent,
streamGenerateContent (SSE), batchEmbedContents, countTokens."""

from typing import Any

import orjson

from gateway.formats import canonical as c
from gateway.formats.openai_chat import UpstreamStreamError, arguments_json
from providers.pricing import Usage
from providers.specs import ProviderSpec
from thinkwatch.lib import sse

WHERE = "Gemini"
# Gemini 3 refuses earlier function calls sent back without their thought signature; a
# call that came through another format has none, and this documented value lets it pass.
SKIP_SIGNATURE = "skip_thought_signature_validator"
_EFFORT_BUDGET = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}

FINISH_FROM: dict[str, c.StopReason] = {
    "STOP": "end",
    "MAX_TOKENS": "max_tokens",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


def encode_request(request: c.Request, model: str, spec: ProviderSpec) -> dict[str, Any]:
    body: dict[str, Any] = {"contents": encode_contents(request.messages)}
    if request.system:
        body["systemInstruction"] = {"parts": [{"text": c.text_of(list(request.system))}]}
    if request.tools:
        body["tools"] = [
            {
                "functionDeclarations": [
                    {
                        "name": t.name,
                        "description": t.description,
                        "parametersJsonSchema": t.parameters,
                    }
                    for t in request.tools
                ]
            }
        ]
    if request.tool_choice:
        mode = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}[
            request.tool_choice.mode
        ]
        config: dict[str, Any] = {"mode": mode}
        if request.tool_choice.mode == "tool":
            config["allowedFunctionNames"] = [request.tool_choice.name]
        body["toolConfig"] = {"functionCallingConfig": config}
    generation: dict[str, Any] = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("max_tokens", "maxOutputTokens"),
    ):
        if getattr(request, ours) is not None:
            generation[theirs] = getattr(request, ours)
    if request.stop:
        generation["stopSequences"] = request.stop
    for ours, theirs in (
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        if ours in request.extras:
            generation[theirs] = request.extras[ours]
    if request.output:
        generation["responseMimeType"] = "application/json"
        if request.output.schema:
            generation["responseJsonSchema"] = request.output.schema
    if request.reasoning:
        budget = request.reasoning.budget_tokens or _EFFORT_BUDGET.get(
            request.reasoning.effort, 8192
        )
        generation["thinkingConfig"] = {
            "thinkingBudget": budget,
            "includeThoughts": request.reasoning.summary,
        }
    if generation:
        body["generationConfig"] = generation
    return body


def encode_contents(messages: list[c.Message]) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    for message in messages:
        role = "model" if message.role == "assistant" else "user"
        parts = [p for p in (_encode_part(part, role) for part in message.parts) if p is not None]
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"] += parts
        else:
            contents.append({"role": role, "parts": parts})
    _sign_first_calls(contents)
    return contents


def _sign_first_calls(contents: list[dict[str, Any]]) -> None:
    for content in contents:
        calls = [p for p in content["parts"] if "functionCall" in p]
        if calls and not any("thoughtSignature" in p for p in calls):
            calls[0]["thoughtSignature"] = SKIP_SIGNATURE


def _encode_part(part: c.Part, role: str) -> dict[str, Any] | None:
    if isinstance(part, c.Text):
        return {"text": part.text} if part.text else None
    if isinstance(part, c.Image):
        if part.url:
            raise c.Unsupported("images given by URL (send them as base64 data)", WHERE)
        return {"inlineData": {"mimeType": part.media_type, "data": part.data}}
    if isinstance(part, c.ToolCall):
        call: dict[str, Any] = {"name": part.name, "args": arguments_json(part.arguments)}
        if part.id:
            call["id"] = part.id
        encoded: dict[str, Any] = {"functionCall": call}
        if part.signature:
            encoded["thoughtSignature"] = part.signature
        return encoded
    if isinstance(part, c.ToolResult):
        if any(isinstance(x, c.Image) for x in part.content):
            raise c.Unsupported("images in tool results", WHERE)
        text = c.text_of(list(part.content))
        response = _result_object(text)
        if part.is_error:
            response = {"error": response}
        result: dict[str, Any] = {"name": part.name, "response": response}
        if part.call_id:
            result["id"] = part.call_id
        return {"functionResponse": result}
    return None  # reasoning from this or another provider is not sent back


def _result_object(text: str) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def usage_of(metadata: object) -> Usage | None:
    if not isinstance(metadata, dict):
        return None
    thoughts = metadata.get("thoughtsTokenCount") or 0
    return Usage(
        input=(metadata.get("promptTokenCount") or 0)
        + (metadata.get("toolUsePromptTokenCount") or 0),
        output=(metadata.get("candidatesTokenCount") or 0) + thoughts,
        cached=metadata.get("cachedContentTokenCount") or 0,
        reasoning=thoughts,
    )


class _Calls:
    """Ids for function calls: Gemini's own when it gives one, else made up once."""

    def __init__(self) -> None:
        self.count = 0

    def id(self, call: dict[str, Any]) -> str:
        self.count += 1
        return str(call.get("id") or f"call_{self.count}")


def _parts(candidate: dict[str, Any], calls: _Calls) -> list[c.Part]:
    parts: list[c.Part] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "functionCall" in part:
            call = part["functionCall"]
            tool_call = c.ToolCall(
                calls.id(call),
                str(call.get("name") or ""),
                orjson.dumps(call.get("args") or {}).decode(),
            )
            tool_call.signature = str(part.get("thoughtSignature") or "")
            parts.append(tool_call)
        elif part.get("thought"):
            parts.append(c.Thinking(str(part.get("text") or "")))
        elif "text" in part:
            parts.append(c.Text(str(part["text"])))
        elif "inlineData" in part or "fileData" in part:
            raise UpstreamStreamError(
                "Gemini answered with media output, which this gateway does not convert"
            )
    return parts


def _stop(candidate: dict[str, Any], parts: list[c.Part]) -> c.StopReason:
    reason = FINISH_FROM.get(str(candidate.get("finishReason")), "end")
    if reason == "end" and any(isinstance(p, c.ToolCall) for p in parts):
        return "tool_use"
    return reason


def decode_response(payload: dict[str, Any]) -> c.Response:
    candidates = payload.get("candidates") or []
    usage = usage_of(payload.get("usageMetadata")) or Usage()
    response_id, model = (
        str(payload.get("responseId") or ""),
        str(payload.get("modelVersion") or ""),
    )
    if not candidates:  # the prompt itself was blocked
        return c.Response(response_id, model, [], "content_filter", usage=usage)
    parts = _parts(candidates[0], _Calls())
    return c.Response(response_id, model, parts, _stop(candidates[0], parts), usage=usage)


class StreamDecoder:
    """A `streamGenerateContent?alt=sse` stream as canonical events."""

    content_type = "text/event-stream"

    def __init__(self) -> None:
        self._splitter = sse.EventSplitter()
        self._blocks = c.Blocks()
        self._calls = _Calls()
        self._started = False
        self._stop: c.StopReason | None = None
        self._saw_call = False

    def feed(self, chunk: bytes) -> list[c.Event]:
        events: list[c.Event] = []
        for raw in self._splitter.feed(chunk):
            data = sse.data_of(raw)
            if data:
                events += self._decode(orjson.loads(data))
        return events

    def _decode(self, payload: dict[str, Any]) -> list[c.Event]:
        if "error" in payload:
            raise UpstreamStreamError(
                str((payload["error"] or {}).get("message") or "stream error")
            )
        events: list[c.Event] = []
        if not self._started:
            self._started = True
            events.append(
                c.Start(
                    str(payload.get("responseId") or ""), str(payload.get("modelVersion") or "")
                )
            )
        blocks = self._blocks
        for candidate in (payload.get("candidates") or [])[:1]:
            for part in _parts(candidate, self._calls):
                if isinstance(part, c.ToolCall):
                    self._saw_call = True
                    key = ("call", part.id)
                    events += blocks.start(key, "tool_call", part.id, part.name)
                    events.append(c.Delta(blocks.get(key), part.arguments))  # type: ignore[arg-type]
                elif isinstance(part, c.Thinking):
                    events += blocks.delta("thinking", "thinking", part.text)
                elif isinstance(part, c.Text):
                    events += blocks.delta("text", "text", part.text)
            if candidate.get("finishReason"):
                self._stop = FINISH_FROM.get(str(candidate["finishReason"]), "end")
        if not payload.get("candidates") and (payload.get("promptFeedback") or {}).get(
            "blockReason"
        ):
            self._stop = "content_filter"
        usage = usage_of(payload.get("usageMetadata"))
        if usage is not None:
            events.append(c.UsageReport(usage))
        return events

    def close(self) -> list[c.Event]:
        stop = self._stop or "end"
        if stop == "end" and self._saw_call:
            stop = "tool_use"
        return [*self._blocks.close_all(), c.Stop(stop)]


def encode_embeddings(model: str, texts: list[str], dimensions: int | None) -> dict[str, Any]:
    requests = []
    for text in texts:
        entry: dict[str, Any] = {"model": f"models/{model}", "content": {"parts": [{"text": text}]}}
        if dimensions:
            entry["outputDimensionality"] = dimensions
        requests.append(entry)
    return {"requests": requests}


def decode_embeddings(payload: dict[str, Any]) -> list[list[float]]:
    return [list(e.get("values") or []) for e in payload.get("embeddings") or []]


def encode_count(request: c.Request, model: str) -> dict[str, Any]:
    generate = encode_request(request, model, None)  # type: ignore[arg-type]
    generate["model"] = f"models/{model}"
    return {"generateContentRequest": generate}
