"""SIGTERM: the gateway (as `make run` starts it) stops accepting, lets live streams finish
within THINKWATCH_DRAIN_SECONDS, cuts what is still running at that deadline, writes every
log record and exits 0."""

import asyncio
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from audit.models import GatewayLog
from providers.models import Provider
from tests.audit.test_durability import stored
from tests.fakes.openai_upstream import FakeOpenAI
from tests.processes import Processes

STREAM = {
    "model": "gpt-4o-mini",
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": "Count slowly."}],
}
WORDS = 20


@pytest.fixture
def slow_upstream(upstream: FakeOpenAI) -> FakeOpenAI:
    """Streams of 20 words, one event every 150 ms (about 3.5 s a stream)."""
    upstream.script(text=" ".join(f"w{n}" for n in range(WORDS)), chunk_delay=0.15)
    return upstream


def gateway_process(tmp_path: Path, drain_seconds: int) -> Iterator[Processes]:
    processes = Processes(tmp_path, "gateway", THINKWATCH_DRAIN_SECONDS=str(drain_seconds))
    processes.start_gateway()
    yield processes
    processes.close()


@pytest.fixture
def draining_gateway(
    transactional_db: None, tmp_path: Path, openai_provider: Provider, slow_upstream: FakeOpenAI
) -> Iterator[Processes]:
    """Ten seconds to drain: more than any of the streams needs."""
    yield from gateway_process(tmp_path, drain_seconds=10)


@pytest.fixture
def hasty_gateway(
    transactional_db: None, tmp_path: Path, openai_provider: Provider, upstream: FakeOpenAI
) -> Iterator[Processes]:
    """One second to drain, and streams of 40 events 200 ms apart (8 s)."""
    upstream.script(text=" ".join(f"w{n}" for n in range(40)), chunk_delay=0.2)
    yield from gateway_process(tmp_path, drain_seconds=1)


class Streams:
    """Live streams through the gateway: each read to its end, or until the server cut it."""

    def __init__(self, gateway: Processes, key: str, count: int) -> None:
        self.gateway = gateway
        self.key = key
        self.count = count
        self.live = 0
        self.all_live = asyncio.Event()
        self.finished = 0

    async def one(self, client: httpx.AsyncClient) -> tuple[bytes, BaseException | None]:
        received = b""
        try:
            async with client.stream("POST", "/v1/chat/completions", json=STREAM) as response:
                assert response.status_code == 200
                async for chunk in response.aiter_raw():
                    if not received:
                        self.live += 1
                        if self.live == self.count:
                            self.all_live.set()
                    received += chunk
        except httpx.TransportError as exc:
            return received, exc
        finally:
            self.finished += 1
        return received, None

    async def run_and_sigterm(self) -> tuple[list[tuple[bytes, BaseException | None]], dict]:
        """Opens the streams, sends SIGTERM once all are live, and waits for both ends."""
        headers = {"Authorization": f"Bearer {self.key}"}
        limits = httpx.Limits(max_connections=self.count)
        async with httpx.AsyncClient(
            base_url=self.gateway.gateway, headers=headers, timeout=30, limits=limits
        ) as client:
            streams = [asyncio.create_task(self.one(client)) for _ in range(self.count)]
            await asyncio.wait_for(self.all_live.wait(), timeout=20)
            signalled = time.monotonic()
            exit_code = asyncio.create_task(asyncio.to_thread(self.gateway.stop, signal.SIGTERM))
            refused_after = await refused_within(self.gateway.gateway, seconds=5)
            finished_when_refused = self.finished
            results = await asyncio.gather(*streams)
            facts = {
                "exit_code": await exit_code,
                "refused_after": refused_after,
                "finished_when_refused": finished_when_refused,
                "ended_after": time.monotonic() - signalled,
            }
        return results, facts


async def refused_within(base_url: str, seconds: float) -> float | None:
    """Seconds until a new connection to the gateway is refused (None: never within)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        try:
            async with httpx.AsyncClient(timeout=1) as probe:
                await probe.get(f"{base_url}/health/live")
        except httpx.ConnectError:
            return time.monotonic() - started
        await asyncio.sleep(0.02)
    return None


def events(body: bytes) -> list[str]:
    return [line[6:] for line in body.decode().split("\n") if line.startswith("data: ")]


def test_it_finishes_every_live_stream_and_writes_every_record_on_sigterm(
    draining_gateway: Processes, bob_key: str
) -> None:
    results, facts = asyncio.run(Streams(draining_gateway, bob_key, 50).run_and_sigterm())

    assert facts["exit_code"] == 0, draining_gateway.output()
    # New connections were refused while all 50 streams were still running.
    assert facts["refused_after"] is not None
    assert facts["finished_when_refused"] == 0
    assert [error for _, error in results] == [None] * 50
    for body, _ in results:
        sent = events(body)
        assert sent[-1] == "[DONE]"
        assert json.loads(sent[-2])["usage"]["completion_tokens"] == WORDS
    assert stored(GatewayLog, 50) == 50
    records = GatewayLog.objects.all()
    assert {(r.status_code, r.streamed, r.disconnected, r.usage_estimated) for r in records} == {
        (200, True, False, False)
    }
    assert {r.output_tokens for r in records} == {WORDS}


def test_a_stream_longer_than_the_drain_time_is_cut_at_the_deadline_and_still_recorded(
    hasty_gateway: Processes, bob_key: str
) -> None:
    ((body, error),), facts = asyncio.run(Streams(hasty_gateway, bob_key, 1).run_and_sigterm())

    assert facts["exit_code"] == 0, hasty_gateway.output()
    assert isinstance(error, httpx.RemoteProtocolError)  # the response ended unfinished
    assert "[DONE]" not in events(body)
    # Cut once the second of drain time had passed, long before its 8 s would have.
    assert 1.0 <= facts["ended_after"] < 4.0
    assert "timeout graceful shutdown exceeded" in hasty_gateway.output()
    assert stored(GatewayLog, 1) == 1
    record = GatewayLog.objects.get()
    sent_words = sum('"content":"' in event for event in events(body))
    # Not a client that left: the gateway stopped under it, and says so.
    assert (record.status_code, record.error_code) == (503, "gateway_stopped")
    assert (record.streamed, record.disconnected, record.usage_estimated) == (True, False, True)
    assert 0 < record.output_tokens == sent_words < 40
