"""Prometheus metrics for the gateway port's `/metrics`.

Request metrics are derived from the log records, at the moment each is submitted: the
record is where a request's outcome is settled once (status, error code, usage, cost,
latency, time to first token), whichever way the request ended. Deriving them there keeps
the counts and the log in agreement and puts no instrumentation in the views.

Labels are bounded. No user, team or key id ever becomes a label; a model is named only
when it is registered in the route table (anything a client made up counts as "other");
providers and MCP servers are the configured ones; error codes map to a fixed set of kinds;
no message text becomes a label. The per-request work is a few dict lookups and counter
increments (docs/observability.md gives the measured cost).

State that is not a request (the audit queue, forwarders, circuit breakers) is read when
Prometheus scrapes, by a collector. The forwarders' figures come from the database, so the
scrape renders in a worker thread and keeps them for a few seconds.

Each process has its own registry; Prometheus scrapes every gateway instance.
"""

import hmac
import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from providers.cache import routes
from thinkwatch.lib.db import off_loop

logger = logging.getLogger(__name__)

OTHER = "other"  # a model or kind outside the bounded set
NONE = "none"  # the field is empty (a request refused before it named a model or provider)

REGISTRY = CollectorRegistry(auto_describe=False)

# LLM calls run from a few hundred milliseconds to minutes.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 20, 30, 60)
_MCP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

RATE_LIMITED = Counter(
    "thinkwatch_rate_limited",
    "Requests refused because a rate limit was reached.",
    ("surface",),
    registry=REGISTRY,
)
BUDGET_REFUSED = Counter(
    "thinkwatch_budget_refused",
    "Requests refused because a budget was exhausted.",
    ("surface",),
    registry=REGISTRY,
)
BUDGET_ALERTS = Counter(
    "thinkwatch_budget_alerts",
    "Budget threshold alerts raised by this process.",
    registry=REGISTRY,
)
UPSTREAM_ERRORS = Counter(
    "thinkwatch_upstream_errors",
    "Provider failures by kind (unreachable, timeout, auth_failed, rate_limited, ...).",
    ("provider", "kind"),
    registry=REGISTRY,
)
MCP_REQUESTS = Counter(
    "thinkwatch_mcp_requests",
    "MCP tool calls, resource reads and prompt gets by server, method and outcome.",
    ("server", "method", "status"),
    registry=REGISTRY,
)
MCP_DURATION = Histogram(
    "thinkwatch_mcp_request_duration_seconds",
    "Time an MCP request took, refusals included.",
    ("server",),
    buckets=_MCP_BUCKETS,
    registry=REGISTRY,
)

# The `upstream_*` error codes of gateway/proxy.py, as kinds.
_UPSTREAM_KINDS = frozenset(
    {
        "error",
        "unreachable",
        "connection_error",
        "auth_failed",
        "rate_limited",
        "timeout",
        "invalid_response",
        "stream_error",
    }
)
_MCP_METHODS = frozenset({"tools/call", "resources/read", "prompts/get"})
_MCP_STATUSES = frozenset(
    {
        "ok",
        "tool_error",
        "invalid",
        "denied",
        "rate_limited",
        "credential_missing",
        "upstream_error",
        "timeout",
        "cancelled",
    }
)


# --- requests ----------------------------------------------------------------------------


class _Histogram:
    """Observations per bucket (not cumulative; the last bucket is +Inf) and their sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # a bucket holds values <= its bound
        self.sum += value

    def add(self, other: "_Histogram") -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum

    def cumulative(self) -> list[tuple[str, float]]:
        edges = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        return list(zip(edges, accumulate(self.counts), strict=True))


class _Series:
    """One label set's request figures, as plain numbers.

    The request path only adds to them: no lock, no label lookup. prometheus_client's
    metric children take a lock for each increment and each histogram bucket, and
    `labels()` builds a tuple of strings per call: counting a request through them took
    ~6 µs, against ~2 µs this way. Adding from a single thread (the gateway's event loop)
    keeps every count exact; the scrape only reads (a count read mid-update is a moment
    behind, no worse).
    """

    __slots__ = ("cost", "duration", "requests", "tokens", "ttft")

    def __init__(self) -> None:
        self.requests = 0
        self.duration = _Histogram(_LATENCY_BUCKETS)
        self.ttft = _Histogram(_TTFT_BUCKETS)
        self.tokens = [0, 0, 0, 0]  # in the order of TOKEN_KINDS
        self.cost = 0.0


TOKEN_KINDS = ("input", "output", "cached", "reasoning")
# Label set of a series: surface, ingress, model, provider, HTTP status.
SeriesKey = tuple[str, str, str, str, int]
_series: dict[SeriesKey, _Series] = {}
_last_failure = 0.0


def model_label(model: str) -> str:
    """`model` if the route table registers it, else "other" (or "none" when empty)."""
    table = routes.peek()
    if table is not None and model in table.models:
        return model
    return OTHER if model else NONE


def observe_gateway(record: dict[str, Any]) -> None:
    """Count one gateway log record (gateway/accounting.py builds it). Never raises: a
    metrics fault must not cost the log record."""
    try:
        _count(record)
    except Exception:
        _failed("gateway")


def _count(record: dict[str, Any]) -> None:
    surface = record["surface"]
    provider = record["provider"] or NONE
    model = model_label(record["model"])
    key = (surface, record["ingress"], model, provider, record["status_code"])
    series = _series.get(key)
    if series is None:
        series = _series[key] = _Series()
    series.requests += 1
    series.duration.observe(record["latency_ms"] / 1000)
    if record["ttft_ms"] is not None:  # streams only (gateway/proxy.py Relay)
        series.ttft.observe(record["ttft_ms"] / 1000)
    tokens = series.tokens
    tokens[0] += record["input_tokens"]
    tokens[1] += record["output_tokens"]
    tokens[2] += record["cached_tokens"]
    tokens[3] += record["reasoning_tokens"]
    cost = record["cost_usd"]
    if cost:
        series.cost += float(cost)
    code = record["error_code"]
    if code:
        _refusal_or_failure(code, surface, provider)


def _refusal_or_failure(code: str, surface: str, provider: str) -> None:
    if code == "rate_limited":
        RATE_LIMITED.labels(surface).inc()
    elif code == "budget_exceeded":
        BUDGET_REFUSED.labels(surface).inc()
    elif code.startswith("upstream_"):
        kind = code[len("upstream_") :]
        UPSTREAM_ERRORS.labels(provider, kind if kind in _UPSTREAM_KINDS else OTHER).inc()


_mcp_servers: dict[int, str] = {}  # server id -> name, for the breakers' labels


def observe_mcp(fields: dict[str, Any]) -> None:
    """Count one MCP log record (mcpgw/records.py). Never raises."""
    try:
        _count_mcp(fields)
    except Exception:
        _failed("mcp")


def _count_mcp(fields: dict[str, Any]) -> None:
    # The server is set only from the configured servers (mcpgw/service.py), never from
    # what the client asked for.
    server = fields.get("server") or NONE
    server_id = fields.get("server_id")
    if server_id is not None:
        _mcp_servers[server_id] = server
    method = fields.get("method", "")
    status = fields.get("status", "")
    MCP_REQUESTS.labels(
        server,
        method if method in _MCP_METHODS else OTHER,
        status if status in _MCP_STATUSES else OTHER,
    ).inc()
    MCP_DURATION.labels(server).observe(fields.get("latency_ms", 0.0) / 1000)
    if status == "rate_limited":
        RATE_LIMITED.labels("mcp_gateway").inc()


def budget_alert() -> None:
    """One budget threshold alert was recorded (quotas/logic.py)."""
    BUDGET_ALERTS.inc()


def _failed(what: str) -> None:
    global _last_failure
    now = time.monotonic()
    if now - _last_failure > 60:  # a fault would repeat on every request: say it once a minute
        _last_failure = now
        logger.exception("metrics.observe_failed", extra={"record": what})


# --- state read at scrape time --------------------------------------------------------------


class _Kept:
    """A value recomputed at most every `seconds` (the forwarders' figures cost queries)."""

    def __init__(self, load: Callable[[], Any], seconds: float) -> None:
        self._load, self._seconds = load, seconds
        self._value: Any = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def get(self) -> Any:
        with self._lock:
            if time.monotonic() - self._at >= self._seconds:
                self._value = self._load()
                self._at = time.monotonic()
            return self._value


def _audit_queue() -> Iterator[Metric]:
    from audit import pipeline

    stats = pipeline.stats()
    sink = [str(stats.get("sink", ""))]
    depth = GaugeMetricFamily(
        "thinkwatch_audit_queue_depth", "Log records waiting to be stored.", labels=["sink"]
    )
    depth.add_metric(sink, stats["depth"])
    dropped = CounterMetricFamily(
        "thinkwatch_audit_queue_dropped", "Log records the queue could not keep.", labels=["sink"]
    )
    dropped.add_metric(sink, stats["dropped"])
    oldest = GaugeMetricFamily(
        "thinkwatch_audit_queue_oldest_seconds",
        "Age of the oldest record waiting to be stored (0 when none waits).",
        labels=["sink"],
    )
    oldest.add_metric(sink, stats.get("oldest_seconds") or 0.0)
    yield from (depth, dropped, oldest)
    if "failing" in stats:
        failing = GaugeMetricFamily(
            "thinkwatch_audit_sink_failing",
            "1 while delivering queued records to the sink keeps failing (they are kept).",
            labels=["sink"],
        )
        failing.add_metric(sink, 1 if stats["failing"] else 0)
        yield failing
    if stats.get("stream_depth") is not None:
        yield GaugeMetricFamily(
            "thinkwatch_audit_stream_depth",
            "Records in the Redis streams, waiting for a Celery worker to store them.",
            value=stats["stream_depth"],
        )


def _forwarder_stats() -> list[dict[str, Any]]:
    from audit import forwarding

    return list(forwarding.stats())


_forwarders = _Kept(_forwarder_stats, seconds=5.0)


def _forwarder_metrics() -> Iterator[Metric]:
    rows = _forwarders.get()
    failures = CounterMetricFamily(
        "thinkwatch_forwarder_failures",
        "Deliveries to a SIEM forwarder that failed (each retry counts).",
        labels=["forwarder", "type"],
    )
    outbox = GaugeMetricFamily(
        "thinkwatch_forwarder_outbox_depth",
        "Records waiting in a forwarder's dead-letter outbox.",
        labels=["forwarder", "type"],
    )
    for row in rows:
        labels = [str(row["name"]), str(row["type"])]
        failures.add_metric(labels, row["failures_total"])
        outbox.add_metric(labels, row["outbox_depth"])
    yield from (failures, outbox)


_BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}


def _breakers() -> Iterator[Metric]:
    from gateway import routing
    from mcpgw import upstream

    worst: dict[int, int] = {}
    for pool in upstream.pools():
        for server_id, breaker in pool.breakers().items():
            state = _BREAKER_STATES[breaker.state]
            worst[server_id] = max(state, worst.get(server_id, 0))
    family = GaugeMetricFamily(
        "thinkwatch_circuit_breaker_state",
        "Circuit breaker of each upstream: 0 closed, 1 half-open (one trial call), 2 open.",
        labels=["surface", "target"],
    )
    for server_id, state in sorted(worst.items()):
        name = _mcp_servers.get(server_id, f"server-{server_id}")
        family.add_metric(["mcp_gateway", name], state)
    now = time.time()
    # Every route a request was routed over ("provider/upstream model": one per route).
    for key, name in sorted(dict(routing.names).items(), key=lambda item: item[1]):
        route = routing.breakers.local.get(key)
        position = route.state(now) if route is not None else "closed"
        family.add_metric(["ai_gateway", name], _BREAKER_STATES[position])
    yield family


def _histograms(
    name: str, doc: str, labels: list[str], found: dict[Any, _Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=labels)
    for values, histogram in found.items():
        family.add_metric(list(values), histogram.cumulative(), histogram.sum)
    return family


def _request_metrics() -> Iterator[Metric]:
    """The request families, each summed over the labels it does not have."""
    requests = CounterMetricFamily(
        "thinkwatch_requests",
        "Gateway requests by surface, ingress format, model, provider and HTTP status.",
        labels=["surface", "ingress", "model", "provider", "status"],
    )
    durations: dict[tuple[str, str, str], _Histogram] = {}
    ttfts: dict[tuple[str, str], _Histogram] = {}
    tokens: dict[tuple[str, str], list[int]] = {}
    costs: dict[tuple[str, str], float] = {}
    for (surface, ingress, model, provider, status), series in list(_series.items()):
        requests.add_metric([surface, ingress, model, provider, str(status)], series.requests)
        route = (model, provider)
        durations.setdefault((surface, *route), _Histogram(_LATENCY_BUCKETS)).add(series.duration)
        ttfts.setdefault(route, _Histogram(_TTFT_BUCKETS)).add(series.ttft)
        counted = tokens.setdefault(route, [0] * len(TOKEN_KINDS))
        tokens[route] = [a + b for a, b in zip(counted, series.tokens, strict=True)]
        costs[route] = costs.get(route, 0.0) + series.cost
    duration = _histograms(
        "thinkwatch_request_duration_seconds",
        "Time from a request's arrival to its end (a stream's last byte).",
        ["surface", "model", "provider"],
        durations,
    )
    ttft = _histograms(
        "thinkwatch_time_to_first_token_seconds",
        "Time from a streamed request's arrival to its first byte to the client.",
        ["model", "provider"],
        ttfts,
    )
    token_family = CounterMetricFamily(
        "thinkwatch_tokens",
        "Tokens by kind: input, output, cached (input read from cache), reasoning.",
        labels=["model", "provider", "kind"],
    )
    for (model, provider), counts in tokens.items():
        for kind, n in zip(TOKEN_KINDS, counts, strict=True):
            token_family.add_metric([model, provider, kind], n)
    cost = CounterMetricFamily(
        "thinkwatch_cost_usd",
        "What requests cost, in US dollars, at the configured prices.",
        labels=["model", "provider"],
    )
    for (model, provider), usd in costs.items():
        cost.add_metric([model, provider], usd)
    yield from (requests, duration, ttft, token_family, cost)


class _StateCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        for part in (_request_metrics, _audit_queue, _forwarder_metrics, _breakers):
            try:
                yield from part()
            except Exception:
                # One broken source must not take the whole scrape down.
                logger.exception("metrics.collect_failed", extra={"source": part.__name__})


REGISTRY.register(_StateCollector())


# --- the endpoint -------------------------------------------------------------------------------


def _render() -> bytes:
    return generate_latest(REGISTRY)


_render_off_loop = off_loop(_render)


def _authorized(request: HttpRequest, token: str) -> bool:
    scheme, _, presented = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


async def endpoint(request: HttpRequest) -> HttpResponse:
    """GET /metrics: only when METRICS_BEARER_TOKEN is set (else 404, as for any unknown
    path), and only with that token."""
    from gateway import errors
    from gateway.views import not_found

    token = settings.METRICS_BEARER_TOKEN
    if not token:
        return not_found(request)
    if request.method not in ("GET", "HEAD"):
        error = errors.GatewayError(
            405, "invalid_request_error", "Use GET on this endpoint.", "method_not_allowed"
        )
        response = errors.response(error)
        response["Allow"] = "GET"
        return response
    if not _authorized(request, token):
        response = errors.response(
            errors.unauthorized(
                "Send the metrics token as 'Authorization: Bearer <token>'.", "invalid_token"
            )
        )
        response["WWW-Authenticate"] = 'Bearer realm="thinkwatch-metrics"'
        return response
    response = HttpResponse(await _render_off_loop(), content_type=CONTENT_TYPE_LATEST)
    response["Cache-Control"] = "no-store"
    return response
