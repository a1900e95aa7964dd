"""What counting a request costs the hot path: `observe_gateway` runs once per request on
the event loop. Timed over 100,000 calls of a realistic record (a stream with tokens, cost
and a time to first token) against a loaded route table; on the development box it takes
about 2-3 µs. The bound is loose so a slow CI box passes, and tight enough to catch a
query, a lock wait or per-call label building creeping in."""

import timeit
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from asgiref.sync import async_to_sync

from providers.cache import routes
from tests.observability.conftest import MODEL
from thinkwatch import metrics

CALLS = 100_000


def record() -> dict[str, Any]:
    return {
        "request_id": "0f" * 16,
        "created_at": datetime.now(UTC),
        "user_id": 7,
        "team_id": 3,
        "api_key_id": 11,
        "api_key_prefix": "tw-1a2b3c4d",
        "surface": "ai_gateway",
        "ingress": "openai_chat",
        "model": MODEL,
        "provider_id": 1,
        "provider": "openai",
        "upstream_model": MODEL,
        "streamed": True,
        "input_tokens": 1200,
        "output_tokens": 350,
        "cached_tokens": 400,
        "reasoning_tokens": 0,
        "weighted_tokens": 1550.0,
        "cost_usd": Decimal("0.0019000000"),
        "latency_ms": 1834.2,
        "ttft_ms": 412.7,
        "status_code": 200,
        "error_code": "",
        "error_message": "",
        "client_ip": "10.0.0.8",
        "user_agent": "openai-python/3.54.0",
        "disconnected": False,
        "usage_estimated": False,
    }


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("priced")
def test_counting_a_request_costs_microseconds() -> None:
    async_to_sync(routes.reload)()
    sample = record()
    metrics.observe_gateway(sample)  # the label set's first use builds its children

    seconds = min(timeit.repeat(lambda: metrics.observe_gateway(sample), number=CALLS, repeat=3))

    per_call_us = seconds / CALLS * 1e6
    print(f"observe_gateway: {per_call_us:.2f} µs per call")
    assert per_call_us < 25
    assert metrics.model_label(MODEL) == MODEL  # measured on the registered-model path
