"""`make soak`: the gateway under steady mixed traffic on loopback for a bounded time, its
memory sampled, every answer checked.

    .venv/bin/python bench/soak.py                     # 30 minutes (what docs/performance.md shows)
    .venv/bin/python bench/soak.py --duration 20 --json  # the suite's smoke run

The gateway runs as `make run` starts it (`python -m thinkwatch.run --only gateway`,
embedded mode, a fresh data directory) in front of:

- fake OpenAI providers (tests/fakes, the documented wire format) that answer, fail with
  500, fail with 503, cut their streams after three events, or fail four requests in ten
  (500, 503, or the connection dropped unanswered) and answer the rest; and a server that
  accepts connections and closes them without answering;
- the MCP fixture server (tests/mcp/fixture_server.py, the official `mcp` SDK).

Traffic, paced at --rate units a second with at most --concurrency in flight: chat
completions, streams, MCP sessions (official SDK client, both protocol eras, a few tool
calls each, one of them failing on purpose now and then), and requests to the failing
providers. Each answer is checked against what its kind must produce; an injected failure
answered as it should be is an *expected* error (the gateway may also retry a flaky
provider into a success, or answer 503 once a route's breaker has opened), anything else
(a wrong status, a malformed body, a timeout, a refused connection) is *unexpected*. The
gateway's RSS is read from /proc every --sample seconds.

At the end the gateway gets SIGTERM; the report gives requests and errors per kind, RSS
at start, end and peak with a least-squares slope over the second half (MB/hour), the
gateway's exit code, and whether every AI request left its log record. The exit code is
1 if anything unexpected happened.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = 20
# Kind -> share of the traffic (units; an MCP unit is one session of several calls).
MIX = {
    "chat": 30,
    "stream": 28,
    "mcp": 12,
    "flaky": 10,
    "upstream_500": 5,
    "upstream_503": 5,
    "upstream_drop": 5,
    "stream_cut": 5,
}
FAILED_UPSTREAM_STATUSES = {502, 503, 504}  # the gateway's answers for a failed provider
MCP_CALLS_PER_SESSION = 4


# --- upstreams -------------------------------------------------------------------------


class DroppingServer(socketserver.ThreadingTCPServer):
    """Accepts a connection, reads the request and closes the connection unanswered."""

    daemon_threads = True
    allow_reuse_address = True

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.settimeout(5)
            received = b""
            while b"\r\n\r\n" not in received:
                chunk = self.request.recv(65536)
                if not chunk:
                    return
                received += chunk

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), self.Handler)
        self.thread = threading.Thread(target=self.serve_forever, name="drop", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


def flaky_openai() -> Any:
    """A fake OpenAI that fails four chat requests in ten: two with 500, one with 503,
    one by dropping the connection unanswered."""
    from aiohttp import web

    from tests.fakes.openai_upstream import FakeOpenAI, openai_error

    class FlakyOpenAI(FakeOpenAI):
        name = "flaky"

        def __init__(self) -> None:
            super().__init__()
            self.turn = 0
            self.injected: Counter[str] = Counter()

        async def _chat(self, request: web.Request) -> web.StreamResponse:
            self.turn += 1
            if self.turn % 5 == 1:
                self.injected["500"] += 1
                return openai_error(500, "The fake provider failed.", "server_error")
            if self.turn % 10 == 3:
                self.injected["503"] += 1
                return openai_error(503, "The fake provider is overloaded.", "server_error")
            if self.turn % 10 == 8:
                self.injected["drop"] += 1
                await request.read()
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            return await super()._chat(request)

    return FlakyOpenAI()


@dataclass
class Upstreams:
    fakes: dict[str, Any]
    drop: DroppingServer
    mcp: subprocess.Popen[bytes]
    mcp_url: str
    seen: Counter[str] = field(default_factory=Counter)

    def forget_requests(self) -> None:
        """The fakes record every request; a long run would fill the driver's memory.
        What they saw is counted first."""
        for name, fake in self.fakes.items():
            self.seen[name] += len(fake.requests)
            fake.requests.clear()

    def stop(self) -> None:
        for fake in self.fakes.values():
            fake.stop()
        self.drop.shutdown()
        stop_process(self.mcp)


def start_upstreams(data_dir: Path) -> Upstreams:
    from tests.fakes.openai_upstream import FakeOpenAI

    text = " ".join(f"w{n}" for n in range(WORDS))
    scripts: dict[str, dict[str, Any]] = {
        "ok": {"text": text, "chunk_delay": 0.01},
        "500": {"status": 500},
        "503": {"status": 503},
        "cut": {"text": text, "chunk_delay": 0.01, "cut_after": 3},
    }
    fakes = {}
    for name, script in scripts.items():
        fake = FakeOpenAI().start()
        fake.script(**script)
        fakes[name] = fake
    fakes["flaky"] = flaky_openai().start()
    fakes["flaky"].script(**scripts["ok"])
    drop = DroppingServer()
    drop.thread.start()
    port = free_port()
    log = (data_dir / "mcp-fixture.log").open("wb")
    mcp = subprocess.Popen(
        [sys.executable, "-m", "tests.mcp.fixture_server", "--port", str(port)],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for(f"http://127.0.0.1:{port}/stats", mcp, "the MCP fixture server")
    return Upstreams(fakes, drop, mcp, f"http://127.0.0.1:{port}/tools/mcp")


# --- the installation ------------------------------------------------------------------


def provision(upstreams: Upstreams) -> str:
    """Migrate the fresh database; add a developer, providers, models and routes, the MCP
    server; return a key for both surfaces."""
    import logging

    import django

    django.setup()
    for chatty in ("httpx", "httpx2", "mcp"):  # a line per request from the clients
        logging.getLogger(chatty).setLevel(logging.WARNING)
    from django.contrib.auth.models import User
    from django.core.management import call_command

    from accounts.access import builtin_role
    from accounts.logic import issue_key
    from accounts.models import RoleAssignment
    from mcpgw.models import McpServer
    from providers.models import AIModel, Provider, Route

    call_command("migrate", interactive=False, verbosity=0)
    user = User.objects.create_user("soak@example.com", "soak@example.com")
    RoleAssignment.objects.get_or_create(user=user, role=builtin_role("developer"), team=None)
    routes = {
        "soak-chat": ("soak-ok", upstreams.fakes["ok"].url),
        "soak-500": ("soak-500", upstreams.fakes["500"].url),
        "soak-503": ("soak-503", upstreams.fakes["503"].url),
        "soak-cut": ("soak-cut", upstreams.fakes["cut"].url),
        "soak-drop": ("soak-drop", upstreams.drop.url),
        "soak-flaky": ("soak-flaky", upstreams.fakes["flaky"].url),
    }
    for model_id, (provider_name, base_url) in routes.items():
        provider = Provider(name=provider_name, type="openai", base_url=base_url)
        provider.set_secret("sk-soak-upstream")
        provider.save()
        model = AIModel.objects.create(
            model_id=model_id, input_price=Decimal("0.15"), output_price=Decimal("0.60")
        )
        Route.objects.create(model=model, provider=provider)
    McpServer.objects.create(name="fixture tools", prefix="fx", url=upstreams.mcp_url)
    _, key = issue_key(name="soak", owner=user, surfaces=["ai_gateway", "mcp_gateway"])
    return key


def records_written() -> dict[str, int]:
    from audit.models import GatewayLog, McpLog

    return {"gateway": GatewayLog.objects.count(), "mcp": McpLog.objects.count()}


# --- the gateway -----------------------------------------------------------------------


class Gateway:
    def __init__(self, data_dir: Path, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = (data_dir / "gateway.log").open("wb")
        self.supervisor = subprocess.Popen(
            [sys.executable, "-m", "thinkwatch.run", "--only", "gateway"],
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_for(f"{self.url}/health/live", self.supervisor, "the gateway")
        self.pid = self._uvicorn_pid()
        self.started = time.monotonic()

    def _uvicorn_pid(self) -> int:
        children = Path(f"/proc/{self.supervisor.pid}/task/{self.supervisor.pid}/children")
        (pid,) = children.read_text().split()
        return int(pid)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> int:
        self.supervisor.send_signal(signal.SIGTERM)
        code = self.supervisor.wait(120)
        self.log.close()
        return code


# --- traffic ---------------------------------------------------------------------------


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    expected: Counter[str] = field(default_factory=Counter)
    unexpected: Counter[str] = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    def bad(self, kind: str, what: str) -> None:
        self.unexpected[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {what}"[:300])


class Traffic:
    def __init__(self, gateway: str, key: str, concurrency: int, tally: Tally) -> None:
        self.gateway = gateway
        self.key = key
        self.tally = tally
        self.slots = asyncio.Semaphore(concurrency)
        self.sessions = 0
        self.rng = random.Random(20261206)  # the same mix on every run

    async def unit(self, http: Any, kind: str) -> None:
        started = time.perf_counter()
        try:
            await getattr(self, kind)(http)
        except Exception as exc:  # a transport error, a timeout, an SDK error
            self.tally.bad(kind, f"{type(exc).__name__}: {exc}")
        finally:
            self.tally.latency[kind].append(time.perf_counter() - started)
            self.slots.release()

    # AI requests; the count of AI requests is what the gateway log must hold at the end.

    async def chat(self, http: Any) -> None:
        self.tally.requests["chat"] += 1
        response = await http.post("/v1/chat/completions", json=body("soak-chat"))
        if not answered(response):
            self.tally.bad("chat", f"{response.status_code} {response.text[:200]}")

    async def flaky(self, http: Any) -> None:
        """Two in five upstream answers fail: retried into a success, or an error answer."""
        self.tally.requests["flaky"] += 1
        response = await http.post("/v1/chat/completions", json=body("soak-flaky"))
        if answered(response):
            return
        if failed_upstream(response):
            self.tally.expected["flaky"] += 1
        else:
            self.tally.bad("flaky", f"{response.status_code} {response.text[:200]}")

    async def stream(self, http: Any) -> None:
        self.tally.requests["stream"] += 1
        status, sent, raw = await read_stream(http, "soak-chat")
        if status != 200 or sent[-1:] != ["[DONE]"] or "usage" not in json.loads(sent[-2]):
            self.tally.bad("stream", f"{status} {raw[-200:]}")

    async def stream_cut(self, http: Any) -> None:
        """The provider drops the stream after three events: one error event and no [DONE]
        (or, once the route's breaker has opened on those failures, an error answer)."""
        self.tally.requests["stream_cut"] += 1
        status, sent, raw = await read_stream(http, "soak-cut")
        if status == 200:
            last = json.loads(sent[-1]) if sent and sent[-1] != "[DONE]" else {}
            cut = "error" in last
        else:
            cut = status in FAILED_UPSTREAM_STATUSES and "error" in json.loads(raw or "{}")
        if cut:
            self.tally.expected["stream_cut"] += 1
        else:
            self.tally.bad("stream_cut", f"{status} {raw[-200:]}")

    async def upstream_500(self, http: Any) -> None:
        await self._failing(http, "upstream_500", "soak-500")

    async def upstream_503(self, http: Any) -> None:
        await self._failing(http, "upstream_503", "soak-503")

    async def upstream_drop(self, http: Any) -> None:
        await self._failing(http, "upstream_drop", "soak-drop")

    async def _failing(self, http: Any, kind: str, model: str) -> None:
        self.tally.requests[kind] += 1
        response = await http.post("/v1/chat/completions", json=body(model))
        if failed_upstream(response):
            self.tally.expected[kind] += 1
        else:
            self.tally.bad(kind, f"{response.status_code} {response.text[:200]}")

    # MCP: a session in one of the two protocol eras, a few calls, closed.

    async def mcp(self, http: Any) -> None:
        self.sessions += 1
        mode = "legacy" if self.sessions % 2 else "2026-07-28"
        failing = self.sessions % 5 == 0
        self.tally.requests["mcp_session"] += 1
        async with mcp_session(f"{self.gateway}/mcp", self.key, mode) as client:
            for n in range(MCP_CALLS_PER_SESSION):
                self.tally.requests["mcp_call"] += 1
                if failing and n == MCP_CALLS_PER_SESSION - 1:
                    result = await client.call_tool("fx__fail", {})
                    if result.is_error:
                        self.tally.expected["mcp_tool_error"] += 1
                    else:
                        self.tally.bad("mcp_call", "fx__fail did not fail")
                    continue
                message = f"soak {self.sessions}.{n}"
                result = await client.call_tool("fx__echo", {"message": message})
                said = "".join(getattr(block, "text", "") for block in result.content)
                if result.is_error or message not in said:
                    self.tally.bad("mcp_call", f"echo answered {said[:100]!r}")

    def pick(self) -> str:
        return self.rng.choices(list(MIX), weights=list(MIX.values()))[0]


def answered(response: Any) -> bool:
    """A completion with the fake's twenty words."""
    answer = response.json() if response.status_code == 200 else {}
    words = (answer.get("choices") or [{}])[0].get("message", {}).get("content", "")
    return len(str(words).split()) == WORDS


def failed_upstream(response: Any) -> bool:
    """The gateway's answer for a provider that failed: 502/503/504 in OpenAI's error shape."""
    error = response.json().get("error") if response.content.startswith(b"{") else None
    return response.status_code in FAILED_UPSTREAM_STATUSES and isinstance(error, dict)


def body(model: str, stream: bool = False) -> dict[str, Any]:
    found: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Count to twenty."}],
    }
    if stream:
        found["stream"] = True
        found["stream_options"] = {"include_usage": True}
    return found


async def read_stream(http: Any, model: str) -> tuple[int, list[str], str]:
    """Status, the data of each event, and the whole body."""
    async with http.stream("POST", "/v1/chat/completions", json=body(model, True)) as response:
        raw = (await response.aread()).decode()
    sent = [line[6:] for line in raw.split("\n") if line.startswith("data: ")]
    return response.status_code, sent, raw


@asynccontextmanager
async def mcp_session(url: str, key: str, mode: str) -> Any:
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, cache=None) as client,  # type: ignore[arg-type]
    ):
        yield client


# --- the run ---------------------------------------------------------------------------


async def drive(
    gateway: Gateway, upstreams: Upstreams, key: str, options: argparse.Namespace
) -> tuple[Tally, list[tuple[float, float]], int]:
    """Traffic for the duration; returns the tally, RSS samples and units not started
    because --concurrency were already in flight."""
    import httpx

    tally = Tally()
    traffic = Traffic(gateway.url, key, options.concurrency, tally)
    samples: list[tuple[float, float]] = []
    skipped = 0
    running: set[asyncio.Task[None]] = set()
    limits = httpx.Limits(max_connections=options.concurrency)
    headers = {"Authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(
        base_url=gateway.url, headers=headers, timeout=30, limits=limits
    ) as http:
        started = time.monotonic()
        end = started + options.duration
        next_unit = next_sample = started
        while (now := time.monotonic()) < end:
            if now >= next_sample:
                samples.append((now - started, gateway.rss_mb()))
                upstreams.forget_requests()
                next_sample += options.sample
            if traffic.slots.locked():
                skipped += 1
            else:
                await traffic.slots.acquire()
                task = asyncio.create_task(traffic.unit(http, traffic.pick()))
                running.add(task)
                task.add_done_callback(running.discard)
            next_unit += 1 / options.rate
            await asyncio.sleep(max(0.0, next_unit - time.monotonic()))
        await asyncio.gather(*running)
        samples.append((time.monotonic() - started, gateway.rss_mb()))
    return tally, samples, skipped


def slope_mb_per_hour(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS over time."""
    if len(samples) < 2:
        return 0.0
    times = [t / 3600 for t, _ in samples]
    return statistics.linear_regression(times, [mb for _, mb in samples]).slope


def checkpoints(samples: list[tuple[float, float]], parts: int = 10) -> dict[str, float]:
    """RSS at the start and at each tenth of the run: {"0%": MB, "10%": MB, ...}."""
    found = {}
    for part in range(parts + 1):
        _, mb = samples[min(len(samples) - 1, part * (len(samples) - 1) // parts)]
        found[f"{100 * part // parts}%"] = round(mb, 1)
    return found


def report(
    options: argparse.Namespace,
    upstreams: Upstreams,
    tally: Tally,
    samples: list[tuple[float, float]],
    skipped: int,
    cpu_seconds: float,
    exit_code: int,
    records: dict[str, int],
) -> dict[str, Any]:
    ai_requests = sum(n for kind, n in tally.requests.items() if not kind.startswith("mcp"))
    rss = [mb for _, mb in samples]
    first_half, second_half = samples[: len(samples) // 2], samples[len(samples) // 2 :]
    latency = {
        kind: {
            "p50_ms": round(statistics.median(values) * 1000, 1),
            "p99_ms": round(sorted(values)[int(len(values) * 0.99)] * 1000, 1),
        }
        for kind, values in sorted(tally.latency.items())
    }
    return {
        "duration_s": options.duration,
        "rate_per_s": options.rate,
        "concurrency": options.concurrency,
        "requests": dict(sorted(tally.requests.items())),
        "expected_errors": dict(sorted(tally.expected.items())),
        "unexpected_errors": dict(sorted(tally.unexpected.items())),
        "unexpected_examples": tally.examples,
        "not_started_at_concurrency_limit": skipped,
        "latency": latency,
        "rss_mb": {
            "start": round(rss[0], 1),
            "end": round(rss[-1], 1),
            "max": round(max(rss), 1),
            "samples": len(rss),
            "slope_first_half_mb_per_hour": round(slope_mb_per_hour(first_half), 2),
            "slope_second_half_mb_per_hour": round(slope_mb_per_hour(second_half), 2),
            "at": checkpoints(samples),
        },
        "upstream_requests": dict(sorted(upstreams.seen.items())),
        "flaky_injected": dict(sorted(upstreams.fakes["flaky"].injected.items())),
        "gateway_cpu_percent": round(100 * cpu_seconds / options.duration, 1),
        "gateway_exit_code": exit_code,
        "records": {"gateway_expected": ai_requests, **records},
    }


def failed(result: dict[str, Any]) -> bool:
    return bool(
        result["unexpected_errors"]
        or result["gateway_exit_code"] != 0
        or result["records"]["gateway"] != result["records"]["gateway_expected"]
    )


def print_summary(result: dict[str, Any]) -> None:
    rss = result["rss_mb"]
    lines = [
        f"soak: {result['duration_s']:g} s at {result['rate_per_s']:g} units/s "
        f"(at most {result['concurrency']} in flight)",
        f"  requests:   {result['requests']}",
        f"  not started (all {result['concurrency']} slots busy): "
        f"{result['not_started_at_concurrency_limit']}",
        f"  expected:   {result['expected_errors']}",
        f"  unexpected: {result['unexpected_errors'] or 0}",
        f"  RSS MB:     start {rss['start']}, end {rss['end']}, max {rss['max']} "
        f"({rss['samples']} samples); slope {rss['slope_first_half_mb_per_hour']:+} MB/h "
        f"in the first half, {rss['slope_second_half_mb_per_hour']:+} MB/h in the second",
        f"  RSS MB at:  {rss['at']}",
        f"  upstreams saw {result['upstream_requests']}; flaky injected {result['flaky_injected']}",
        f"  gateway CPU {result['gateway_cpu_percent']} %, exit code {result['gateway_exit_code']}",
        f"  records:    {result['records']}",
    ]
    lines += [f"  ! {example}" for example in result["unexpected_examples"]]
    print("\n".join(lines), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=1800, help="seconds (default 1800)")
    parser.add_argument("--rate", type=float, default=20, help="units started per second")
    parser.add_argument("--concurrency", type=int, default=32, help="units in flight at most")
    parser.add_argument("--sample", type=float, default=5, help="seconds between RSS samples")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "soak")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    options = parser.parse_args(argv)

    data_dir = options.data_dir.resolve()
    shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True)
    port = free_port()
    os.environ.update(
        {
            "DJANGO_SETTINGS_MODULE": "thinkwatch.settings",
            "THINKWATCH_DATA_DIR": str(data_dir),
            "THINKWATCH_GATEWAY_PORT": str(port),
            "THINKWATCH_MCP_ALLOWED_NETWORKS": "127.0.0.1/32",
            "DATABASE_URL": "",
            "REDIS_URL": "",
            "CLICKHOUSE_URL": "",
        }
    )
    upstreams = start_upstreams(data_dir)
    try:
        key = provision(upstreams)
        gateway = Gateway(data_dir, port)
        try:
            tally, samples, skipped = asyncio.run(drive(gateway, upstreams, key, options))
            cpu = gateway.cpu_seconds()
        finally:
            exit_code = gateway.stop()
    finally:
        upstreams.stop()
    upstreams.forget_requests()
    result = report(options, upstreams, tally, samples, skipped, cpu, exit_code, records_written())
    (data_dir / "soak.json").write_text(json.dumps(result, indent=2))
    if options.json:
        print(json.dumps(result))
    else:
        print_summary(result)
    return 1 if failed(result) else 0


# --- processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], name: str, seconds: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{name} exited with code {process.returncode}")
        try:
            httpx.get(url, timeout=1)
        except httpx.TransportError:
            time.sleep(0.1)
            continue
        return
    stop_process(process)
    sys.exit(f"{name} did not answer within {seconds:g} s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


if __name__ == "__main__":
    sys.exit(main())
