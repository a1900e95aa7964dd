"""What one gateway request cost, and the log record that says so."""

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from audit import bodies
from gateway import logs
from providers.pricing import FREE, Usage
from quotas import admission
from quotas.counters import Verdict

if TYPE_CHECKING:
    from accounts.cache import KeyGrant
    from providers.cache import Upstream


STOPPED = "The gateway stopped before the request finished: its drain time ran out."


def _cancelled() -> bool:
    """Whether the request's task is being cancelled. Besides a client leaving (which the
    handler records first), only uvicorn cancels requests: those still running when
    THINKWATCH_DRAIN_SECONDS have passed after SIGTERM."""
    try:
        task = asyncio.current_task()
    except RuntimeError:  # no event loop: a synchronous caller
        return False
    return task is not None and task.cancelling() > 0


class Call:
    """One request through the gateway, from arrival to its single log record."""

    __slots__ = (
        "_done",
        "cache",
        "capture",
        "disconnected",
        "error_code",
        "error_message",
        "estimated",
        "grant",
        "guardrails",
        "ingress",
        "model",
        "price",
        "quota",
        "redactions",
        "request",
        "routing",
        "started",
        "started_wall",
        "status",
        "streamed",
        "surface",
        "ttft",
        "upstream",
        "usage",
    )

    def __init__(self, request: Any, ingress: str, surface: str = "ai_gateway") -> None:
        self.request = request
        self.ingress = ingress
        self.surface = surface
        self.started = time.perf_counter()
        self.started_wall = time.time()
        self.grant: KeyGrant | None = None
        self.model = ""
        self.upstream: Upstream | None = None
        self.price = FREE
        self.usage = Usage()
        self.status = 0
        self.streamed = False
        self.ttft: float | None = None
        self.error_code = ""
        self.error_message = ""
        self.disconnected = False
        self.estimated = False
        self.quota: Verdict | None = None  # the request's admission, settled at the end
        self.routing: Any = None  # gateway.routing.Attempts, when a route was chosen
        self.guardrails: list[dict[str, Any]] | None = None  # content-policy hits
        self.redactions: dict[str, int] | None = None  # values redacted before egress, by kind
        self.cache: dict[str, Any] | None = None  # the response cache's outcome
        # The request's bodies when audit.capture_bodies is on (audit/bodies.py).
        self.capture = bodies.gateway_capture(request.body)
        self._done = False

    def first_byte(self) -> None:
        if self.ttft is None:
            self.ttft = time.perf_counter() - self.started

    def fail(self, status: int, code: str | None, message: str) -> None:
        self.status = status
        self.error_code = code or ""
        self.error_message = message

    def cost(self) -> float:
        return self.price.cost(self.usage)

    def finish(self) -> None:
        """Write the log record; safe to call more than once."""
        if self._done:
            return
        self._done = True
        if getattr(self.request, "client_disconnected", False):
            self.disconnected = True
        elif _cancelled():  # with its client still there: the drain time ran out (SIGTERM)
            self.disconnected = False
            self.fail(503, "gateway_stopped", STOPPED)
        admission.settle(self)
        if self.capture is None:
            logs.submit(self._record())
        else:
            bodies.submit(logs.submit, self._record(), self.capture)

    def _record(self) -> dict[str, Any]:
        grant, upstream, usage = self.grant, self.upstream, self.usage
        meta = self.request.META
        return {
            "request_id": self.request.request_id,
            "created_at": datetime.fromtimestamp(self.started_wall, UTC),
            "user_id": grant.owner_id if grant else None,
            "team_id": grant.team_id if grant else None,
            "api_key_id": grant.id if grant else None,
            "api_key_prefix": grant.prefix if grant else "",
            "surface": self.surface,
            "ingress": self.ingress,
            "model": self.model[:200],
            "provider_id": upstream.provider_id if upstream else None,
            "provider": upstream.provider_name if upstream else "",
            "upstream_model": upstream.upstream_model if upstream else "",
            "streamed": self.streamed,
            "input_tokens": usage.input,
            "output_tokens": usage.output,
            "cached_tokens": usage.cached,
            "reasoning_tokens": usage.reasoning,
            "weighted_tokens": self.price.weighted(usage),
            "cost_usd": Decimal(f"{self.cost():.10f}"),
            "latency_ms": (time.perf_counter() - self.started) * 1000,
            "ttft_ms": self.ttft * 1000 if self.ttft is not None else None,
            "status_code": 499 if self.disconnected and self.status == 200 else self.status,
            "error_code": self.error_code[:64],
            "error_message": self.error_message[:2000],
            "client_ip": self.request.client_ip,
            "user_agent": meta.get("HTTP_USER_AGENT", "")[:512],
            "disconnected": self.disconnected,
            "usage_estimated": self.estimated,
            "routing": self.routing.record() if self.routing is not None else None,
            "guardrails": self.guardrails,
            "redactions": self.redactions,
            "cache": self.cache,
        }
