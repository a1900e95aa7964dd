"""Requests through the gateway, counted on /metrics by model, provider and outcome, with
bounded labels."""

import time
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest
from django.contrib.auth.models import User
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from accounts.models import ApiKey
from audit.models import Forwarder, ForwardOutbox
from tests.conftest import LiveServer, free_port, logged
from tests.factories import (
    AIModelFactory,
    BudgetFactory,
    ProviderFactory,
    RateLimitRuleFactory,
    RouteFactory,
)
from tests.fakes.openai_upstream import FakeOpenAI
from tests.observability.conftest import MODEL, TOKEN, scrape, value, wait_for

pytestmark = pytest.mark.usefixtures("metrics_token", "priced")

REQUESTS = "thinkwatch_requests_total"
OK = {"surface": "ai_gateway", "ingress": "openai_chat", "model": MODEL, "provider": "openai"}
ROUTE = {"model": MODEL, "provider": "openai"}


def ask(client: openai.OpenAI, model: str = MODEL, stream: bool = False) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=stream
    )


def test_it_counts_requests_by_model_provider_and_status(
    gateway: LiveServer, client: openai.OpenAI
) -> None:
    before = scrape(gateway.url)

    ask(client)
    ask(client)

    after = scrape(gateway.url)
    assert (
        value(after, REQUESTS, **OK, status="200") - value(before, REQUESTS, **OK, status="200")
        == 2
    )


def test_it_observes_each_request_in_the_duration_histogram(
    gateway: LiveServer, client: openai.OpenAI
) -> None:
    name = "thinkwatch_request_duration_seconds_count"
    labels = {"surface": "ai_gateway", **ROUTE}
    before = value(scrape(gateway.url), name, **labels)

    ask(client)

    assert value(scrape(gateway.url), name, **labels) - before == 1


def test_it_records_the_time_to_first_token_of_a_stream(
    gateway: LiveServer, client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(first_event_delay=0.3)
    name = "thinkwatch_time_to_first_token_seconds"
    before = scrape(gateway.url)

    for _ in ask(client, stream=True):
        pass

    wait_for(
        lambda: (
            value(scrape(gateway.url), f"{name}_count", **ROUTE)
            > value(before, f"{name}_count", **ROUTE)
        )
    )
    after = scrape(gateway.url)
    assert value(after, f"{name}_count", **ROUTE) - value(before, f"{name}_count", **ROUTE) == 1
    assert value(after, f"{name}_sum", **ROUTE) - value(before, f"{name}_sum", **ROUTE) >= 0.3
    # Under half a second: the one observation fell in the 0.5 s bucket, not the 0.25 s one.
    assert value(after, f"{name}_bucket", **ROUTE, le="0.25") == value(
        before, f"{name}_bucket", **ROUTE, le="0.25"
    )


def test_it_leaves_the_time_to_first_token_alone_without_a_stream(
    gateway: LiveServer, client: openai.OpenAI
) -> None:
    name = "thinkwatch_time_to_first_token_seconds_count"
    before = value(scrape(gateway.url), name, **ROUTE)

    ask(client)

    assert value(scrape(gateway.url), name, **ROUTE) == before


def test_it_counts_tokens_and_cost_as_the_log_records_them(
    gateway: LiveServer, client: openai.OpenAI, upstream: FakeOpenAI
) -> None:
    upstream.script(text="one two three", prompt_tokens=1000, cached_tokens=400, reasoning_tokens=2)
    before = scrape(gateway.url)

    ask(client)
    ask(client)

    after = scrape(gateway.url)
    records = logged()
    tokens = "thinkwatch_tokens_total"
    for kind, column in [
        ("input", "input_tokens"),
        ("output", "output_tokens"),
        ("cached", "cached_tokens"),
        ("reasoning", "reasoning_tokens"),
    ]:
        counted = value(after, tokens, **ROUTE, kind=kind) - value(
            before, tokens, **ROUTE, kind=kind
        )
        assert counted == sum(getattr(r, column) for r in records), kind
    cost = value(after, "thinkwatch_cost_usd_total", **ROUTE) - value(
        before, "thinkwatch_cost_usd_total", **ROUTE
    )
    assert cost == pytest.approx(float(sum(r.cost_usd for r in records)))
    assert cost > 0


def test_it_counts_a_rate_limited_request(
    gateway: LiveServer, client: openai.OpenAI, bob: User
) -> None:
    RateLimitRuleFactory(subject_kind="user", subject_id=str(bob.pk), limit=1, window=60)
    before = scrape(gateway.url)

    ask(client)
    with pytest.raises(openai.RateLimitError):
        ask(client)

    after = scrape(gateway.url)
    name = "thinkwatch_rate_limited_total"
    assert value(after, name, surface="ai_gateway") - value(before, name, surface="ai_gateway") == 1
    assert (
        value(after, REQUESTS, **OK, status="429") - value(before, REQUESTS, **OK, status="429")
        == 1
    )
    assert value(after, "thinkwatch_budget_refused_total", surface="ai_gateway") == value(
        before, "thinkwatch_budget_refused_total", surface="ai_gateway"
    )


def test_it_counts_a_request_refused_by_a_budget(
    gateway: LiveServer, client: openai.OpenAI, bob: User
) -> None:
    # Less than the worst case of any request: the first one is refused.
    BudgetFactory(subject_kind="user", subject_id=str(bob.pk), limit=Decimal("0.000001"))
    name = "thinkwatch_budget_refused_total"
    before = value(scrape(gateway.url), name, surface="ai_gateway")

    with pytest.raises(openai.RateLimitError):
        ask(client)

    assert value(scrape(gateway.url), name, surface="ai_gateway") - before == 1


def test_it_counts_the_budget_alerts_a_request_raises(
    gateway: LiveServer, client: openai.OpenAI, bob: User, upstream: FakeOpenAI
) -> None:
    upstream.script(text="one", prompt_tokens=9600)  # $0.0096: past 50, 80 and 95 % of $0.01
    BudgetFactory(subject_kind="user", subject_id=str(bob.pk), limit=Decimal("0.01"))
    name = "thinkwatch_budget_alerts_total"
    before = value(scrape(gateway.url), name)

    ask(client)

    wait_for(lambda: value(scrape(gateway.url), name) - before >= 3)
    time.sleep(0.2)  # and no more than three
    assert value(scrape(gateway.url), name) - before == 3


@pytest.mark.parametrize(
    ("status", "kind"),
    [(500, "error"), (401, "auth_failed"), (429, "rate_limited")],
)
def test_it_counts_upstream_errors_by_provider_and_kind(
    gateway: LiveServer, client: openai.OpenAI, upstream: FakeOpenAI, status: int, kind: str
) -> None:
    upstream.script(status=status)
    name = "thinkwatch_upstream_errors_total"
    before = value(scrape(gateway.url), name, provider="openai", kind=kind)

    with pytest.raises(openai.APIStatusError):
        ask(client)

    assert value(scrape(gateway.url), name, provider="openai", kind=kind) - before == 1


def test_it_counts_a_provider_that_cannot_be_reached(
    gateway: LiveServer, client: openai.OpenAI
) -> None:
    down = ProviderFactory(
        name="down", type="openai", base_url=f"http://127.0.0.1:{free_port()}/v1"
    )
    RouteFactory(model=AIModelFactory(model_id="served-by-down"), provider=down)
    name = "thinkwatch_upstream_errors_total"
    before = value(scrape(gateway.url), name, provider="down", kind="unreachable")

    with pytest.raises(openai.APIStatusError):
        ask(client, model="served-by-down")

    assert value(scrape(gateway.url), name, provider="down", kind="unreachable") - before == 1


def test_an_unknown_model_never_becomes_a_label(gateway: LiveServer, client: openai.OpenAI) -> None:
    invented = "no-such-model-3f9c2"
    before = scrape(gateway.url)

    with pytest.raises(openai.NotFoundError):
        ask(client, model=invented)

    response = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert invented not in response.text
    labels = {
        "surface": "ai_gateway",
        "ingress": "openai_chat",
        "model": "other",
        "provider": "none",
    }
    after = scrape(gateway.url)
    assert (
        value(after, REQUESTS, **labels, status="404")
        - value(before, REQUESTS, **labels, status="404")
        == 1
    )


def test_a_model_a_provider_serves_by_prefix_counts_as_other(
    gateway: LiveServer, client: openai.OpenAI
) -> None:
    invented = "gpt-made-up-by-the-client"  # not registered; the OpenAI provider takes gpt-*
    labels = {
        "surface": "ai_gateway",
        "ingress": "openai_chat",
        "model": "other",
        "provider": "openai",
    }
    before = value(scrape(gateway.url), REQUESTS, **labels, status="200")

    ask(client, model=invented)

    response = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert invented not in response.text
    assert value(scrape(gateway.url), REQUESTS, **labels, status="200") - before == 1


ALLOWED_LABELS = {
    *("surface", "ingress", "model", "provider", "status", "kind", "le"),
    *("server", "method", "sink", "forwarder", "type", "target"),
}


def test_no_label_names_a_user_a_key_or_a_team(
    gateway: LiveServer, client: openai.OpenAI, bob: User
) -> None:
    ask(client)
    with pytest.raises(openai.NotFoundError):
        ask(client, model="no-such-model-for-labels")

    response = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    names = {
        label
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        for label in sample.labels
    }
    prefix = ApiKey.objects.get(owner=bob).prefix
    assert names <= ALLOWED_LABELS
    assert prefix not in response.text
    assert bob.username not in response.text


def test_it_shows_the_audit_queue(gateway: LiveServer) -> None:
    from django.conf import settings

    samples = scrape(gateway.url)

    sink = frozenset({("sink", "redis" if settings.REDIS_URL else "store")})
    assert ("thinkwatch_audit_queue_depth", sink) in samples
    assert ("thinkwatch_audit_queue_dropped_total", sink) in samples
    assert ("thinkwatch_audit_queue_oldest_seconds", sink) in samples


def test_it_shows_each_forwarders_failures_and_outbox(gateway: LiveServer) -> None:
    siem = Forwarder.objects.create(
        name="siem",
        type="webhook",
        destination="https://siem.example.com/ingest",
        families=["gateway"],
        failures_total=3,
    )
    ForwardOutbox.objects.create(
        forwarder=siem,
        family="gateway",
        first_seq=1,
        last_seq=5,
        count=5,
        batch_id="batch-1",
        payload="[]",
        next_attempt_at=timezone.now(),
    )
    labels = {"forwarder": "siem", "type": "webhook"}

    # The figures are kept for a few seconds between scrapes.
    wait_for(
        lambda: value(scrape(gateway.url), "thinkwatch_forwarder_failures_total", **labels) == 3,
        seconds=10,
    )
    assert value(scrape(gateway.url), "thinkwatch_forwarder_outbox_depth", **labels) == 5
