"""What every fake provider shares: an aiohttp server on a loopback port in its own
thread, the script a test gives it, and a record of every request it received.

A fake renders the same abstract `Script` (text, tool calls, thinking, usage, failures) in
its own provider's documented wire format, written from that provider's API reference and
independent of the gateway's converters, so a test compares the gateway against the
provider's format and not against itself.
"""

import asyncio
import json
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from aiohttp import web


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]
    # Stream the arguments' JSON in exactly these pieces (they join to that JSON text);
    # empty: in the provider's usual two or three.
    pieces: tuple[str, ...] = ()


@dataclass(frozen=True)
class Script:
    text: str = "Hello from the fake provider, streamed word by word."
    tool_calls: tuple[ToolCall, ...] = ()
    thinking: str = ""  # reasoning the model shows, where the provider has it
    signature: str = "EqQBCkYIARgCIkDfakesignature"  # Anthropic's signature on the thinking
    stop: str = "end"  # "end" or "max_tokens"
    status: int = 200
    fail_times: int | None = None  # answer `status` this many times, then succeed
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
    expected_key: str | None = None  # refuse requests that do not present this credential
    embedding_dims: int = 8
    pieces: tuple[str, ...] = ()  # stream `text` in exactly these pieces (they join to it)
    # Answer the n-th request received with answers[n - 1] as its text (the last one
    # repeats), instead of `text`: tell answers to different requests apart.
    answers: tuple[str, ...] = ()

    @property
    def words(self) -> list[str]:
        if self.pieces:
            return list(self.pieces)
        if not self.text:
            return []
        parts = self.text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(parts)]

    @property
    def completion_tokens(self) -> int:
        return len(self.words) + 7 * len(self.tool_calls) + self.reasoning_tokens


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: Any  # parsed JSON when it was JSON, else the raw bytes
    raw: bytes


def embedding(text: str, dims: int) -> list[float]:
    """A deterministic vector for a text, so tests can compare them."""
    seed = sum(text.encode()) or 1
    return [round(((seed * (i + 1)) % 997) / 997, 6) for i in range(dims)]


class FakeServer:
    """Subclasses add their routes in `routes()`."""

    name = "fake"

    def __init__(self) -> None:
        self._script = Script()
        self.requests: list[Seen] = []
        self.cut_streams = 0
        self.failures_sent = 0
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=f"fake-{self.name}", daemon=True)

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def script_now(self) -> Script:
        return self._script

    def script(self, **changes: Any) -> None:
        self._script = replace(Script(), **changes)
        self.failures_sent = 0

    def failing(self) -> bool:
        """Whether this request gets the script's error status (counted)."""
        script = self._script
        if script.status < 300:
            return False
        if script.fail_times is not None and self.failures_sent >= script.fail_times:
            return False
        self.failures_sent += 1
        return True

    def reset(self) -> None:
        self._script = Script()
        self.requests.clear()
        self.cut_streams = 0
        self.failures_sent = 0

    def start(self) -> "FakeServer":
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError(f"the fake {self.name} did not start")
        return self

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._runner is not None
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def routes(self, app: web.Application) -> None:
        raise NotImplementedError

    async def record(self, request: web.Request) -> Seen:
        raw = await request.read()
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        seen = Seen(
            request.method,
            request.path,
            dict(request.query),
            {k.lower(): v for k, v in request.headers.items()},
            body,
            raw,
        )
        self.requests.append(seen)
        answers = self._script.answers
        if answers:
            text = answers[min(len(self.requests), len(answers)) - 1]
            self._script = replace(self._script, text=text)
        if self._script.delay:
            await asyncio.sleep(self._script.delay)
        return seen

    def canned(self) -> web.Response | None:
        """The script's verbatim answer, if it has one."""
        script = self._script
        if script.body is None:
            return None
        return web.Response(
            body=script.body,
            status=script.status,
            headers=script.headers,
            content_type=script.content_type or "application/json",
        )

    async def send_events(
        self, request: web.Request, events: list[bytes], content_type: str
    ) -> web.StreamResponse:
        """Stream pre-encoded events, honouring the script's delays and cut."""
        script = self._script
        response = web.StreamResponse(headers={"Content-Type": content_type, **script.headers})
        await response.prepare(request)
        await asyncio.sleep(script.first_event_delay)
        for count, event in enumerate(events):
            if script.cut_after is not None and count >= script.cut_after:
                self.cut_streams += 1
                assert request.transport is not None
                request.transport.close()
                return response
            await response.write(event)
            if script.chunk_delay:
                await asyncio.sleep(script.chunk_delay)
        await response.write_eof()
        return response

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        self.routes(app)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        self._loop.run_forever()


def sse(data: Any, event: str | None = None) -> bytes:
    """One server-sent event with a JSON (or literal string) data field."""
    payload = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()
