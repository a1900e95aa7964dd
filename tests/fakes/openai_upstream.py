"""A fake OpenAI API: a real HTTP server on loopback speaking the Chat Completions wire
format (JSON and server-sent events, usage chunk only when `stream_options.include_usage`
asks for it, errors in OpenAI's shape).

Tests steer it with `fake.script(...)`; every request it receives is recorded.
"""

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class Script:
    text: str = "Hello from the fake provider, streamed word by word."
    status: int = 200
    error: dict[str, Any] | None = None  # body of a non-2xx answer
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before the response starts
    chunk_delay: float = 0.0  # seconds between stream events
    first_event_delay: float = 0.0  # seconds between a stream's headers and its first event
    cut_after: int | None = None  # drop the connection after this many stream events
    prompt_tokens: int = 11
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    body: bytes | None = None  # answer these exact bytes instead (status and headers apply)
    content_type: str | None = None
    expected_key: str | None = None  # answer 401 unless this bearer token is sent

    @property
    def words(self) -> list[str]:
        parts = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(parts)]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: Any


class FakeOpenAI:
    def __init__(self) -> None:
        self._script = Script()
        self.requests: list[Seen] = []
        self.cut_streams = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-openai", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, **changes: Any) -> None:
        self._script = replace(Script(), **changes)

    def reset(self) -> None:
        self._script = Script()
        self.requests.clear()
        self.cut_streams = 0

    def start(self) -> "FakeOpenAI":
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._runner is not None
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": []})

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        script = self._script
        raw = await request.read()
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw
        self.requests.append(
            Seen(request.path, {k.lower(): v for k, v in request.headers.items()}, body)
        )
        if script.delay:
            await asyncio.sleep(script.delay)
        if (
            script.expected_key
            and request.headers.get("Authorization") != f"Bearer {script.expected_key}"
        ):
            return _error(
                401,
                "Incorrect API key provided: sk-****",
                "invalid_request_error",
                "invalid_api_key",
            )
        if script.body is not None:
            return web.Response(
                body=script.body,
                status=script.status,
                headers=script.headers,
                content_type=script.content_type or "application/json",
            )
        if script.status >= 300:
            error = script.error or {
                "message": "The fake provider failed.",
                "type": "server_error",
                "code": None,
            }
            return web.json_response({"error": error}, status=script.status, headers=script.headers)
        if body.get("stream"):
            return await self._stream(request, body, script)
        return web.json_response(_completion(body, script), headers=script.headers)

    async def _stream(
        self, request: web.Request, body: dict[str, Any], script: Script
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", **script.headers}
        )
        await response.prepare(request)
        await asyncio.sleep(script.first_event_delay)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        for count, event in enumerate(_events(body, script, include_usage)):
            if script.cut_after is not None and count >= script.cut_after:
                self.cut_streams += 1
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(b"data: " + event + b"\n\n")
            if script.chunk_delay:
                await asyncio.sleep(script.chunk_delay)
        await response.write_eof()
        return response


def _error(status: int, message: str, kind: str, code: str | None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}, status=status
    )


def _usage(script: Script) -> dict[str, Any]:
    completion = len(script.words)
    return {
        "prompt_tokens": script.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": script.prompt_tokens + completion,
        "prompt_tokens_details": {"cached_tokens": script.cached_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": script.reasoning_tokens,
            "audio_tokens": 0,
        },
    }


def _completion(body: dict[str, Any], script: Script) -> dict[str, Any]:
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": script.text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(script),
    }


def _events(body: dict[str, Any], script: Script, include_usage: bool) -> list[bytes]:
    base = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": body.get("model"),
    }
    if include_usage:
        base["usage"] = None
    chunks = []
    for i, word in enumerate(script.words):
        delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
        chunks.append(
            {
                **base,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}],
            }
        )
    chunks.append(
        {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    )
    if include_usage:
        chunks.append({**base, "choices": [], "usage": _usage(script)})
    return [json.dumps(chunk, separators=(",", ":")).encode() for chunk in chunks] + [b"[DONE]"]
