"""A fake OpenAI API and a fake Azure OpenAI resource, real HTTP servers on loopback.

The OpenAI fake speaks, as OpenAI's API reference documents them:

- Chat Completions (`POST /v1/chat/completions`): a `chat.completion` object, or with
  `"stream": true` `chat.completion.chunk` server-sent events ending in `data: [DONE]`;
  tool calls arrive as deltas indexed per call (id, type and name first, then the
  arguments in fragments); the usage chunk (empty `choices`) only when
  `stream_options.include_usage` asks for it, every other chunk then carrying `"usage": null`.
- Responses (`POST /v1/responses`): a `response` object whose `output` holds reasoning,
  message and function_call items, or with `"stream": true` the semantic events
  (`event:` lines, `sequence_number`s) from `response.created` to `response.completed`
  (or `response.incomplete`), without a `[DONE]`.
- Embeddings (`POST /v1/embeddings`): a list of `embedding` objects, as floats or, when
  `encoding_format` is `base64` (what the official SDK asks for), as little-endian float32
  bytes in base64.
- Errors as `{"error": {"message", "type", "param", "code"}}`.

The Azure fake answers the same bodies at a resource's deployment URLs
(`/openai/deployments/{deployment}/...?api-version=...`), authenticated by an `api-key`
header, with Azure's own 401 and 404 bodies.

Tests steer a fake with `fake.script(...)`; every request it receives is recorded.
"""

import base64
import hashlib
import itertools
import json
import struct
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer, Script, ToolCall, embedding, sse

FINGERPRINT = "fp_f4e0a1b2c3"
DEFAULT_ERROR = {
    "message": "The fake provider failed.",
    "type": "server_error",
    "param": None,
    "code": None,
}
AZURE_ACCESS_DENIED = (
    "Access denied due to invalid subscription key or wrong API endpoint. Make sure to "
    "provide a valid key for an active subscription and use a correct regional API "
    "endpoint for your resource."
)
UNPARSABLE_BODY = (
    "We could not parse the JSON body of your request. (HINT: This likely means you aren't "
    "using your HTTP library correctly. The OpenAI API expects a JSON payload, but what was "
    "sent was not valid JSON. If you have trouble figuring out how to fix this, please "
    "contact us through our help center at help.openai.com.)"
)


@dataclass(frozen=True)
class Call:
    """One accepted request: the script it is answered from, its JSON body, its model, and
    when the answer was created (one timestamp for every event of a stream)."""

    script: Script
    body: dict[str, Any]
    model: str
    created: int


def openai_error(
    status: int,
    message: str,
    kind: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    error = {"message": message, "type": kind, "param": param, "code": code}
    return web.json_response({"error": error}, status=status, headers=headers)


class FakeOpenAI(FakeServer):
    name = "openai"

    @property
    def url(self) -> str:
        """The base URL a client is given: OpenAI's API root, `/v1` included."""
        return f"{self.root}/v1"

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/responses", self._responses)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_get("/v1/models", self._models)

    # What the Azure fake answers differently.

    def refusal(self, request: web.Request, script: Script) -> web.Response | None:
        """The answer to a request this provider would refuse before reading it."""
        if script.expected_key and (
            request.headers.get("Authorization") != f"Bearer {script.expected_key}"
        ):
            return openai_error(
                401,
                "Incorrect API key provided: sk-****",
                "invalid_request_error",
                "invalid_api_key",
            )
        return None

    def model_of(self, request: web.Request, body: dict[str, Any]) -> str:
        return str(body.get("model") or "")

    # The request's way in, shared by every route.

    async def _accept(self, request: web.Request) -> Call | web.Response:
        seen = await self.record(request)
        script = self._script
        refused = self.refusal(request, script)
        if refused is not None:
            return refused
        canned = self.canned()
        if canned is not None:
            return canned
        if self.failing():
            return web.json_response(
                {"error": script.error or DEFAULT_ERROR},
                status=script.status,
                headers=script.headers,
            )
        if not isinstance(seen.body, dict):
            return openai_error(400, UNPARSABLE_BODY, "invalid_request_error")
        return Call(script, seen.body, self.model_of(request, seen.body), int(time.time()))

    async def _models(self, request: web.Request) -> web.Response:
        await self.record(request)
        refused = self.refusal(request, self._script)
        if refused is not None:
            return refused
        return web.json_response({"object": "list", "data": []})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        call = await self._accept(request)
        if isinstance(call, web.Response):
            return call
        script, body = call.script, call.body
        ident = _ident("chatcmpl-", "chat", call.model, script.text, *_call_ids(script))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            events = chat_chunks(script, call.model, ident, call.created, include_usage)
            return await self.send_events(request, events, "text/event-stream")
        return web.json_response(
            chat_completion(script, call.model, ident, call.created), headers=script.headers
        )

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        call = await self._accept(request)
        if isinstance(call, web.Response):
            return call
        if call.body.get("stream"):
            return await self.send_events(request, response_events(call), "text/event-stream")
        return web.json_response(
            response_object(call, _final_status(call.script), output_items(call.script)),
            headers=call.script.headers,
        )

    async def _embeddings(self, request: web.Request) -> web.StreamResponse:
        call = await self._accept(request)
        if isinstance(call, web.Response):
            return call
        inputs = _embedding_inputs(call.body.get("input"))
        if inputs is None:
            return openai_error(
                400,
                "'$.input' is invalid. Please check the API reference: "
                "https://platform.openai.com/docs/api-reference.",
                "invalid_request_error",
            )
        dims = call.body.get("dimensions")
        dims = dims if isinstance(dims, int) and dims > 0 else call.script.embedding_dims
        as_base64 = call.body.get("encoding_format") == "base64"
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": _encoded(embedding(text, dims), as_base64),
            }
            for i, (text, _) in enumerate(inputs)
        ]
        tokens = sum(count for _, count in inputs)
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": call.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            },
            headers=call.script.headers,
        )


class FakeAzureOpenAI(FakeOpenAI):
    """Azure OpenAI: OpenAI's bodies at a resource's deployment URLs."""

    name = "azure"

    @property
    def url(self) -> str:
        """The resource endpoint; a client builds `/openai/deployments/...` on it."""
        return self.root

    def routes(self, app: web.Application) -> None:
        deployment = "/openai/deployments/{deployment}"
        app.router.add_post(f"{deployment}/chat/completions", self._chat)
        app.router.add_post(f"{deployment}/embeddings", self._embeddings)

    def refusal(self, request: web.Request, script: Script) -> web.Response | None:
        if "api-version" not in request.query:
            return web.json_response(
                {"error": {"code": "404", "message": "Resource not found"}}, status=404
            )
        if script.expected_key and request.headers.get("api-key") != script.expected_key:
            return web.json_response(
                {"error": {"code": "401", "message": AZURE_ACCESS_DENIED}}, status=401
            )
        return None

    def model_of(self, request: web.Request, body: dict[str, Any]) -> str:
        # Azure names the deployment's underlying model here; the deployment stands in for it.
        return request.match_info["deployment"]


# Chat Completions


def chat_completion(script: Script, model: str, ident: str, created: int) -> dict[str, Any]:
    message: dict[str, Any] = {
        "role": "assistant",
        "content": script.text or None,
        "refusal": None,
        "annotations": [],
    }
    if script.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
            }
            for call in script.tool_calls
        ]
    return {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": _finish_reason(script),
            }
        ],
        "usage": chat_usage(script),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }


def chat_chunks(
    script: Script, model: str, ident: str, created: int, include_usage: bool
) -> list[bytes]:
    head: dict[str, Any] = {
        "id": ident,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return {**head, "choices": [choice], **({"usage": None} if include_usage else {})}

    deltas: list[dict[str, Any]] = [{"content": word} for word in script.words]
    for index, call in enumerate(script.tool_calls):
        opening = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        deltas.append({"tool_calls": [opening]})
        deltas.extend(
            {"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
            for piece in call.pieces or _fragments(json.dumps(call.arguments))
        )
    # The first delta names the role; when it opens a tool call, the content is null.
    first = deltas[0] if deltas else {"content": ""}
    deltas[:1] = [{"role": "assistant", "content": first.get("content"), **first}]
    chunks = [chunk(delta) for delta in deltas]
    chunks.append(chunk({}, _finish_reason(script)))
    if include_usage:
        chunks.append({**head, "choices": [], "usage": chat_usage(script)})
    return [sse(c) for c in chunks] + [sse("[DONE]")]


def chat_usage(script: Script) -> dict[str, Any]:
    return {
        "prompt_tokens": script.prompt_tokens,
        "completion_tokens": script.completion_tokens,
        "total_tokens": script.prompt_tokens + script.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": script.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": script.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _finish_reason(script: Script) -> str:
    if script.tool_calls:
        return "tool_calls"
    return "length" if script.stop == "max_tokens" else "stop"


# Responses


def output_items(script: Script) -> list[dict[str, Any]]:
    """The finished items of a response's `output`, in the order the model produced them."""
    items: list[dict[str, Any]] = []
    if script.thinking:
        items.append(
            {
                "id": _ident("rs_", "reasoning", script.thinking),
                "type": "reasoning",
                "summary": [{"type": "summary_text", "text": script.thinking}],
            }
        )
    if script.text:
        items.append(
            {
                "id": _ident("msg_", "message", script.text),
                "type": "message",
                "status": "incomplete" if script.stop == "max_tokens" else "completed",
                "role": "assistant",
                "content": [_output_text(script.text)],
            }
        )
    items.extend(_function_call(call) for call in script.tool_calls)
    return items


def response_object(call: Call, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    """A `response` object; request parameters it reports are echoed from the request."""
    script, body = call.script, call.body
    finished = status in ("completed", "incomplete")
    reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
    return {
        "id": _ident("resp_", "response", call.model, script.text, *_call_ids(script)),
        "object": "response",
        "created_at": call.created,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": None,
        "incomplete_details": ({"reason": "max_output_tokens"} if status == "incomplete" else None),
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": body.get("max_tool_calls"),
        "model": call.model,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "prompt_cache_key": body.get("prompt_cache_key"),
        "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": body.get("text") or {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_logprobs": body.get("top_logprobs", 0),
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": response_usage(script) if finished else None,
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def response_usage(script: Script) -> dict[str, Any]:
    return {
        "input_tokens": script.prompt_tokens,
        "input_tokens_details": {"cached_tokens": script.cached_tokens},
        "output_tokens": script.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": script.reasoning_tokens},
        "total_tokens": script.prompt_tokens + script.completion_tokens,
    }


def response_events(call: Call) -> list[bytes]:
    """The semantic events of a streamed response, numbered in order."""
    script = call.script
    payloads: list[dict[str, Any]] = []

    def emit(kind: str, **fields: Any) -> None:
        payloads.append({"type": kind, "sequence_number": len(payloads), **fields})

    emit("response.created", response=response_object(call, "in_progress", []))
    emit("response.in_progress", response=response_object(call, "in_progress", []))
    final = output_items(script)
    for index, item in enumerate(final):
        at = {"item_id": item["id"], "output_index": index}
        if item["type"] == "reasoning":
            emit("response.output_item.added", output_index=index, item={**item, "summary": []})
            empty = {"type": "summary_text", "text": ""}
            emit("response.reasoning_summary_part.added", **at, summary_index=0, part=empty)
            for word in _words(script.thinking):
                emit("response.reasoning_summary_text.delta", **at, summary_index=0, delta=word)
            emit(
                "response.reasoning_summary_text.done", **at, summary_index=0, text=script.thinking
            )
            part = {"type": "summary_text", "text": script.thinking}
            emit("response.reasoning_summary_part.done", **at, summary_index=0, part=part)
        elif item["type"] == "message":
            opened = {**item, "status": "in_progress", "content": []}
            emit("response.output_item.added", output_index=index, item=opened)
            text = {**at, "content_index": 0}
            emit("response.content_part.added", **text, part=_output_text(""))
            for word in script.words:
                emit("response.output_text.delta", **text, delta=word, logprobs=[])
            emit("response.output_text.done", **text, text=script.text, logprobs=[])
            emit("response.content_part.done", **text, part=_output_text(script.text))
        else:
            opened = {**item, "status": "in_progress", "arguments": ""}
            emit("response.output_item.added", output_index=index, item=opened)
            for piece in _call_pieces(script, item) or _fragments(item["arguments"]):
                emit("response.function_call_arguments.delta", **at, delta=piece)
            emit(
                "response.function_call_arguments.done",
                **at,
                name=item["name"],
                arguments=item["arguments"],
            )
        emit("response.output_item.done", output_index=index, item=item)
    status = _final_status(script)
    emit(f"response.{status}", response=response_object(call, status, final))
    return [sse(payload, event=payload["type"]) for payload in payloads]


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _function_call(call: ToolCall) -> dict[str, Any]:
    return {
        "id": _ident("fc_", "function_call", call.id),
        "type": "function_call",
        "status": "completed",
        "arguments": json.dumps(call.arguments),
        "call_id": call.id,
        "name": call.name,
    }


def _call_pieces(script: Script, item: dict[str, Any]) -> tuple[str, ...]:
    """The pieces a test scripted for the function call `item`, if any."""
    return next((c.pieces for c in script.tool_calls if c.id == item["call_id"]), ())


def _final_status(script: Script) -> str:
    return "incomplete" if script.stop == "max_tokens" else "completed"


# Embeddings


def _embedding_inputs(value: Any) -> list[tuple[str, int]] | None:
    """Each input as (the text its vector is made from, its token count), or None if invalid.

    OpenAI takes a string, a list of strings, a list of token ids, or a list of such lists.
    """
    if isinstance(value, str) and value:
        return [(value, _token_count(value))]
    if not isinstance(value, list) or not value:
        return None
    if all(isinstance(v, str) and v for v in value):
        return [(v, _token_count(v)) for v in value]
    if all(isinstance(v, int) for v in value):
        return [(" ".join(map(str, value)), len(value))]
    if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
        return [(" ".join(map(str, v)), len(v)) for v in value]
    return None


def _token_count(text: str) -> int:
    return len(text) // 4 + 1


def _encoded(vector: list[float], as_base64: bool) -> list[float] | str:
    if not as_base64:
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


# Shared


def _ident(prefix: str, *seed: str) -> str:
    """An id in OpenAI's shape, the same for the same answer (so two runs compare equal)."""
    return prefix + hashlib.sha256("\x1f".join(seed).encode()).hexdigest()[:32]


def _call_ids(script: Script) -> list[str]:
    return [call.id for call in script.tool_calls]


def _words(text: str) -> list[str]:
    """A text in word-sized deltas, the spaces kept, as `Script.words` splits the answer."""
    parts = text.split(" ") if text else []
    return [w if i == 0 else " " + w for i, w in enumerate(parts)]


def _fragments(arguments: str) -> list[str]:
    """Tool-call arguments in the two or three pieces a stream delivers them in."""
    count = 3 if len(arguments) >= 6 else 2
    cuts = [len(arguments) * i // count for i in range(count + 1)]
    return [arguments[a:b] for a, b in itertools.pairwise(cuts) if arguments[a:b]]
