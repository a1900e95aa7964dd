"""A fake Google Gemini API (generativelanguage.googleapis.com, v1beta): a real HTTP server
on loopback speaking Gemini's own wire format, written from Google's API reference.

- `POST /v1beta/models/{model}:generateContent` (`/v1/...` too) answers one
  `GenerateContentResponse`: `candidates[0].content.parts` holds a thought part
  (`"thought": true`) when the script thinks, a text part, and one `functionCall` part per
  tool call (parallel calls are several parts of one candidate, the first carrying the
  `thoughtSignature`); `finishReason` is `STOP` (also for tool calls) or `MAX_TOKENS`;
  `usageMetadata` counts prompt, candidates, thoughts (`thoughtsTokenCount`, outside
  `candidatesTokenCount`) and cached prompt tokens.
- `POST /v1beta/models/{model}:streamGenerateContent?alt=sse` streams the same response as
  server-sent events (`data: {json}` with CRLF line ends, no `[DONE]`): the thought, then a
  chunk per word, then every function call in one chunk; each chunk carries the usage so
  far (cumulative, as Gemini reports it) and the last one the `finishReason` and the full
  usage. Without `alt=sse` the stream is one JSON array, as the real API sends it.
- `:embedContent`, `:batchEmbedContents` and `:countTokens`.
- Credentials come in the `x-goog-api-key` header (or `?key=`); errors in Google's shape
  `{"error": {"code", "message", "status"}}`.

Tests steer it with `fake.script(...)`; every request it receives is recorded.
"""

import json
import uuid
from typing import Any

from aiohttp import web

from tests.fakes.base import FakeServer, Script, embedding

# google.rpc.Code names of the HTTP statuses the Gemini API answers with.
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "NOT_IMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

MESSAGES = {
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
}

BAD_KEY = "API key not valid. Please pass a valid API key."


def google_error(
    status: int, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> web.Response:
    """An error in Google's JSON shape (google.rpc.Status under "error")."""
    error = {
        "code": status,
        "message": message,
        "status": STATUS_NAMES.get(status, "UNKNOWN"),
        **extra,
    }
    return web.json_response({"error": error}, status=status, headers=headers)


def _texts(value: Any) -> list[str]:
    """Every `text` field anywhere in a request body, in order."""
    if isinstance(value, dict):
        found = [value["text"]] if isinstance(value.get("text"), str) else []
        for key, item in value.items():
            if key != "text":
                found.extend(_texts(item))
        return found
    if isinstance(value, list):
        return [text for item in value for text in _texts(item)]
    return []


def _frame(response: dict[str, Any]) -> bytes:
    """One server-sent event as Gemini frames it: a data field, CRLF line ends."""
    return b"data: " + json.dumps(response, separators=(",", ":")).encode() + b"\r\n\r\n"


class FakeGemini(FakeServer):
    name = "gemini"

    @property
    def url(self) -> str:
        """The base URL a client is configured with; it appends `/v1beta/models/...`."""
        return self.root

    def routes(self, app: web.Application) -> None:
        # The variable's default pattern ([^{}/]+) takes the colon, so "model:method" is one
        # segment and the handler splits it, as the API's custom-method URLs require.
        # The API serves the stable v1 as well as v1beta; the SDK's 3.x default is v1.
        app.router.add_post("/{version:v1beta|v1}/models/{target}", self._dispatch)

    # -- the shared preamble: record, credentials, canned and failing answers -----------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        seen = await self.record(request)
        script = self.script_now
        model, _, method = request.match_info["target"].partition(":")
        handlers = {
            "generateContent": self._generate,
            "streamGenerateContent": self._stream,
            "embedContent": self._embed,
            "batchEmbedContents": self._batch_embed,
            "countTokens": self._count_tokens,
        }
        if method not in handlers:
            return google_error(404, f"Method models/{model}:{method} is not found.")
        if script.expected_key:
            key = request.headers.get("x-goog-api-key") or request.query.get("key")
            if key != script.expected_key:
                return google_error(
                    400,
                    BAD_KEY,
                    details=[
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "API_KEY_INVALID",
                            "domain": "googleapis.com",
                            "metadata": {"service": "generativelanguage.googleapis.com"},
                        }
                    ],
                )
        canned = self.canned()
        if canned is not None:
            return canned
        if script.status >= 300:
            if script.error is not None:
                return web.json_response(
                    {"error": script.error}, status=script.status, headers=script.headers
                )
            message = MESSAGES.get(script.status, "The fake provider failed.")
            return google_error(script.status, message, script.headers)
        body = seen.body if isinstance(seen.body, dict) else {}
        return await handlers[method](request, model, body, script)

    # -- generateContent ----------------------------------------------------------------

    async def _generate(
        self, request: web.Request, model: str, body: dict[str, Any], script: Script
    ) -> web.StreamResponse:
        response = self._response(model, script, _parts(script), final=True)
        return web.json_response(response, headers=script.headers)

    async def _stream(
        self, request: web.Request, model: str, body: dict[str, Any], script: Script
    ) -> web.StreamResponse:
        chunks: list[list[dict[str, Any]]] = []
        if script.thinking:
            chunks.append([{"text": script.thinking, "thought": True}])
        chunks.extend([{"text": word}] for word in script.words)
        if script.tool_calls:
            chunks.append(_calls(script))
        if not chunks:
            chunks.append([])
        if script.thinking and not script.tool_calls:
            # Without function calls the signature rides on the last part of the response.
            chunks[-1] = [
                *chunks[-1][:-1],
                {**chunks[-1][-1], "thoughtSignature": script.signature},
            ]
        response_id = _response_id()
        responses = []
        text_so_far = 0
        for index, parts in enumerate(chunks):
            text_so_far += sum(1 for part in parts if "text" in part and not part.get("thought"))
            final = index == len(chunks) - 1
            responses.append(
                self._response(model, script, parts, final, response_id, words_so_far=text_so_far)
            )
        if request.query.get("alt") == "sse":
            return await self.send_events(
                request, [_frame(r) for r in responses], "text/event-stream"
            )
        # Without alt=sse the API streams one JSON array, an element at a time.
        encoded = [json.dumps(r, indent=2).encode() for r in responses]
        events = [b"[" + encoded[0]] + [b"\r\n,\r\n" + e for e in encoded[1:]]
        events[-1] += b"]"
        return await self.send_events(request, events, "application/json; charset=UTF-8")

    def _response(
        self,
        model: str,
        script: Script,
        parts: list[dict[str, Any]],
        final: bool,
        response_id: str | None = None,
        words_so_far: int | None = None,
    ) -> dict[str, Any]:
        content: dict[str, Any] = {"role": "model"}
        if parts:
            content["parts"] = parts
        candidate: dict[str, Any] = {"content": content}
        if final:
            candidate["finishReason"] = "MAX_TOKENS" if script.stop == "max_tokens" else "STOP"
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": _usage(script, None if final else words_so_far),
            "modelVersion": model,
            "responseId": response_id or _response_id(),
        }

    # -- embeddings and token counting --------------------------------------------------

    async def _embed(
        self, request: web.Request, model: str, body: dict[str, Any], script: Script
    ) -> web.StreamResponse:
        return web.json_response({"embedding": _embedding(body, script)}, headers=script.headers)

    async def _batch_embed(
        self, request: web.Request, model: str, body: dict[str, Any], script: Script
    ) -> web.StreamResponse:
        requests = body.get("requests")
        if not isinstance(requests, list) or not requests:
            return google_error(
                400, "* BatchEmbedContentsRequest.requests: contents is not specified"
            )
        embeddings = [_embedding(r if isinstance(r, dict) else {}, script) for r in requests]
        return web.json_response({"embeddings": embeddings}, headers=script.headers)

    async def _count_tokens(
        self, request: web.Request, model: str, body: dict[str, Any], script: Script
    ) -> web.StreamResponse:
        tokens = max(1, sum(len(text) for text in _texts(body)) // 4)
        return web.json_response(
            {
                "totalTokens": tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}],
            },
            headers=script.headers,
        )


def _calls(script: Script) -> list[dict[str, Any]]:
    """One functionCall part per tool call; the first carries the thought signature."""
    parts: list[dict[str, Any]] = []
    for index, call in enumerate(script.tool_calls):
        part: dict[str, Any] = {
            "functionCall": {"id": call.id, "name": call.name, "args": call.arguments}
        }
        if index == 0:
            part["thoughtSignature"] = script.signature
        parts.append(part)
    return parts


def _parts(script: Script) -> list[dict[str, Any]]:
    """A whole response's parts: the thought, the text, the function calls."""
    parts: list[dict[str, Any]] = []
    if script.thinking:
        parts.append({"text": script.thinking, "thought": True})
    if script.text:
        parts.append({"text": script.text})
    if script.tool_calls:
        parts.extend(_calls(script))
    elif script.thinking:
        parts[-1] = {**parts[-1], "thoughtSignature": script.signature}
    return parts


def _usage(script: Script, words_so_far: int | None = None) -> dict[str, Any]:
    """Gemini's usage: thoughts are counted apart from the candidates, and the cached tokens
    are a share of the prompt's. `words_so_far` gives a mid-stream chunk's running count."""
    thoughts = script.reasoning_tokens
    candidates = script.completion_tokens - thoughts
    if words_so_far is not None:
        candidates = min(candidates, words_so_far)
    usage: dict[str, Any] = {
        "promptTokenCount": script.prompt_tokens,
        "candidatesTokenCount": candidates,
        "totalTokenCount": script.prompt_tokens + candidates + thoughts,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": script.prompt_tokens}],
    }
    if thoughts > 0:
        usage["thoughtsTokenCount"] = thoughts
    if script.cached_tokens > 0:
        usage["cachedContentTokenCount"] = script.cached_tokens
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": script.cached_tokens}]
    return usage


def _embedding(request: dict[str, Any], script: Script) -> dict[str, Any]:
    text = "".join(_texts(request.get("content") or {}))
    dims = request.get("outputDimensionality") or script.embedding_dims
    return {"values": embedding(text, int(dims))}


def _response_id() -> str:
    return uuid.uuid4().hex[:22]
