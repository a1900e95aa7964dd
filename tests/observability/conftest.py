"""Scraping the gateway's /metrics as Prometheus would, for tests that count by difference
(the registry lives as long as the test process)."""

import time
from collections.abc import Callable, Iterator
from decimal import Decimal

import httpx
import pytest
from django.test import override_settings
from prometheus_client.parser import text_string_to_metric_families

from providers.models import Provider

# A real ClickHouse for readiness, the MCP fixture server for the MCP metrics.
from tests.clickhouse.conftest import clickhouse_url  # noqa: F401
from tests.factories import AIModelFactory, RouteFactory
from tests.mcp.conftest import fixture_base, fixture_upstream, upstream_logs  # noqa: F401

TOKEN = "metrics-scrape-token-0123456789"
MODEL = "gpt-4o-mini"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics_token() -> Iterator[str]:
    with override_settings(METRICS_BEARER_TOKEN=TOKEN):
        yield TOKEN


@pytest.fixture
def priced(openai_provider: Provider) -> None:
    """gpt-4o-mini, registered and routed to the fake OpenAI, at $1 / $2 per 1M tokens."""
    model = AIModelFactory(model_id=MODEL, input_price=Decimal("1"), output_price=Decimal("2"))
    RouteFactory(model=model, provider=openai_provider)


def scrape(base_url: str) -> Samples:
    response = httpx.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def wait_for(condition: Callable[[], bool], seconds: float = 5) -> None:
    """Streams are counted when their relay closes, just after the client has the last byte."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
