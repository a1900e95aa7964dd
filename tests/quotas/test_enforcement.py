"""Rate limits and budgets at the gateway: exact under concurrency, refusals in the client's
format, layering of role, user and key rules, resets, reconciliation from the log."""

import asyncio
import json
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from audit.models import AuditEvent, GatewayLog
from providers.models import Provider
from quotas.models import BudgetAlert
from tests.conftest import LiveServer, logged
from tests.factories import (
    AIModelFactory,
    BudgetFactory,
    RateLimitRuleFactory,
    RoleAssignmentFactory,
    RoleFactory,
    RouteFactory,
    TeamFactory,
    make_key,
)
from tests.fakes.base import FakeServer
from tests.fakes.openai_upstream import FakeOpenAI

MODEL = "gpt-4o-mini"


def chat_body(max_tokens: int = 3) -> bytes:
    return json.dumps(
        {"model": MODEL, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}
    ).encode()


def burst(url: str, key: str, n: int, body: bytes | None = None) -> list[httpx.Response]:
    """n requests at once."""

    async def all_at_once() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
        async with httpx.AsyncClient(limits=limits, timeout=60) as client:
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            send = [
                client.post(
                    f"{url}/v1/chat/completions", content=body or chat_body(), headers=headers
                )
                for _ in range(n)
            ]
            return list(await asyncio.gather(*send))

    return asyncio.run(all_at_once())


def statuses(responses: list[httpx.Response]) -> dict[int, int]:
    counts: dict[int, int] = {}
    for response in responses:
        counts[response.status_code] = counts.get(response.status_code, 0) + 1
    return counts


@pytest.fixture
def priced(openai_provider: Provider) -> None:
    """gpt-4o-mini at $1 per 1M input tokens and $2 per 1M output tokens."""
    model = AIModelFactory(model_id=MODEL, input_price=Decimal("1"), output_price=Decimal("2"))
    RouteFactory(model=model, provider=openai_provider)


def test_it_admits_exactly_the_limit_of_200_concurrent_requests(
    gateway: LiveServer, priced: None, bob: User
) -> None:
    api_key, key = make_key(bob)
    RateLimitRuleFactory(subject_kind="api_key", subject_id=str(api_key.pk), limit=50, window=60)

    responses = burst(gateway.url, key, 200)

    assert statuses(responses) == {200: 50, 429: 150}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "api_key:requests/1m" in refused.json()["error"]["message"]
    assert refused.headers["x-thinkwatch-limit"] == "api_key:requests/1m"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-limit-requests"] == "50"


def test_it_logs_refused_requests_without_calling_the_provider(
    gateway: LiveServer, priced: None, bob: User, upstream: FakeOpenAI
) -> None:
    api_key, key = make_key(bob)
    RateLimitRuleFactory(subject_kind="api_key", subject_id=str(api_key.pk), limit=1)

    burst(gateway.url, key, 3)

    assert len(upstream.requests) == 1
    assert sorted(r.status_code for r in logged()) == [200, 429, 429]


def test_it_tells_successful_callers_what_remains(
    gateway: LiveServer, priced: None, bob: User
) -> None:
    api_key, key = make_key(bob)
    RateLimitRuleFactory(subject_kind="api_key", subject_id=str(api_key.pk), limit=10)
    RateLimitRuleFactory(
        subject_kind="api_key", subject_id=str(api_key.pk), limit=1000, window=3600
    )

    response = burst(gateway.url, key, 1)[0]

    assert (
        response.headers["x-ratelimit-limit-requests"],
        response.headers["x-ratelimit-remaining-requests"],
    ) == ("10", "9")


def test_it_refuses_anthropic_clients_in_anthropics_shape(
    gateway: LiveServer, priced: None, bob: User
) -> None:
    api_key, key = make_key(bob)
    RateLimitRuleFactory(subject_kind="api_key", subject_id=str(api_key.pk), limit=1)
    claude = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    claude.messages.create(model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "hi"}])

    with pytest.raises(anthropic.RateLimitError) as caught:
        claude.messages.create(
            model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "hi"}]
        )

    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert caught.value.response.headers["retry-after"]


def test_it_keeps_a_usd_budget_under_5x_concurrent_demand(
    gateway: LiveServer, priced: None, bob: User, upstream: FakeOpenAI
) -> None:
    body = chat_body(max_tokens=3)
    upstream.script(
        text="one two three", prompt_tokens=len(body) // 4
    )  # the real cost is the worst case
    per_request = (len(body) // 4 * 1 + 3 * 2) / 1_000_000
    user_key_cap = 10 * per_request + per_request / 2  # room for 10 requests, not 11
    _, key = make_key(bob)
    BudgetFactory(
        subject_kind="user",
        subject_id=str(bob.pk),
        period="day",
        limit=Decimal(f"{user_key_cap:.6f}"),
    )

    responses = burst(gateway.url, key, 50, body)

    spent = sum(float(r.cost_usd) for r in logged())
    assert statuses(responses) == {200: 10, 429: 40}
    assert spent <= user_key_cap
    assert (
        next(r for r in responses if r.status_code == 429).json()["error"]["code"]
        == "budget_exceeded"
    )


def test_it_refuses_a_token_window_once_exhausted(
    gateway: LiveServer, priced: None, bob: User, upstream: FakeOpenAI
) -> None:
    upstream.script(prompt_tokens=40, text="one two three four five six seven eight nine ten")
    api_key, key = make_key(bob)
    RateLimitRuleFactory(
        subject_kind="api_key", subject_id=str(api_key.pk), metric="tokens", limit=100, window=3600
    )

    sequential = [burst(gateway.url, key, 1)[0].status_code for _ in range(3)]

    assert sequential == [200, 200, 429]  # 50 then 100 weighted tokens: exhausted


def subject_of(kind: str, user: User, api_key: Any) -> str:
    """The subject id a rule of this kind gets; a role is made and given to the user."""
    if kind == "role":
        role = RoleFactory()
        RoleAssignmentFactory(user=user, role=role)
        return str(role.pk)
    return str({"user": user.pk, "api_key": api_key.pk}[kind])


@pytest.mark.parametrize(
    ("rules", "admitted"),
    [
        ([("role", 10), ("role", 5)], 5),  # the strictest role wins
        ([("role", 10), ("role", 5), ("user", 8)], 8),  # the user's own rule replaces the roles'
        ([("role", 10), ("role", 5), ("user", 8), ("api_key", 2)], 2),  # the key's replaces both
        ([("role", 3), ("api_key", 6)], 6),  # even when it is looser
    ],
)
def test_it_layers_role_user_and_key_rules(
    gateway: LiveServer, priced: None, bob: User, rules: list[tuple[str, int]], admitted: int
) -> None:
    api_key, key = make_key(bob)
    for kind, limit in rules:
        RateLimitRuleFactory(
            subject_kind=kind, subject_id=subject_of(kind, bob, api_key), limit=limit
        )

    responses = burst(gateway.url, key, 12)

    assert statuses(responses) == {200: admitted, 429: 12 - admitted}


def test_it_counts_role_defaults_per_user_across_their_keys(
    gateway: LiveServer, priced: None, bob: User
) -> None:
    role = RoleFactory()
    RoleAssignmentFactory(user=bob, role=role)
    RateLimitRuleFactory(subject_kind="role", subject_id=str(role.pk), limit=3)
    _, laptop = make_key(bob, name="laptop")
    _, ci = make_key(bob, name="ci")

    responses = burst(gateway.url, laptop, 2) + burst(gateway.url, ci, 2)

    assert statuses(responses) == {200: 3, 429: 1}


@pytest.mark.parametrize("kind", ["team", "provider", "model"])
def test_it_applies_the_rules_of_every_subject_a_request_touches(
    gateway: LiveServer, priced: None, bob: User, openai_provider: Provider, kind: str
) -> None:
    team = TeamFactory()
    _, key = make_key(bob, team=team)
    ident = {"team": team.pk, "provider": openai_provider.pk, "model": MODEL}[kind]
    RateLimitRuleFactory(subject_kind=kind, subject_id=str(ident), limit=2)

    responses = burst(gateway.url, key, 5)

    assert statuses(responses) == {200: 2, 429: 3}
    assert (
        f"{kind}:requests/1m"
        in next(r for r in responses if r.status_code == 429).json()["error"]["message"]
    )


def test_it_stops_applying_an_expired_rule(gateway: LiveServer, priced: None, bob: User) -> None:
    import time_machine

    api_key, key = make_key(bob)
    RateLimitRuleFactory(
        subject_kind="api_key",
        subject_id=str(api_key.pk),
        limit=1,
        window=86400,
        expires_at=timezone.now() + timedelta(hours=1),
    )
    burst(gateway.url, key, 1)

    with time_machine.travel(timezone.now() + timedelta(hours=2)):
        later = burst(gateway.url, key, 3)

    assert statuses(later) == {200: 3}


def test_it_slides_the_window_at_the_gateway(gateway: LiveServer, priced: None, bob: User) -> None:
    import time_machine

    api_key, key = make_key(bob)
    RateLimitRuleFactory(subject_kind="api_key", subject_id=str(api_key.pk), limit=2, window=60)
    start = (int(time.time()) // 60 + 1) * 60 + 0.5  # just after a minute boundary

    with time_machine.travel(start, tick=False) as clock:
        first = burst(gateway.url, key, 2)
        clock.move_to(start + 59)
        full = burst(gateway.url, key, 1)
        clock.move_to(start + 60)
        freed = burst(gateway.url, key, 2)

    assert [r.status_code for r in first + full] == [200, 200, 429]
    assert statuses(freed) == {200: 2}


class WebhookSink(FakeServer):
    name = "webhook"

    def routes(self, app: Any) -> None:
        from aiohttp import web

        async def receive(request: web.Request) -> web.Response:
            await self.record(request)
            return web.Response(status=204)

        app.router.add_post("/alerts", receive)


@pytest.fixture
def sink() -> Any:
    server = WebhookSink().start()
    yield server
    server.stop()


def test_it_fires_each_alert_threshold_once_even_when_one_response_crosses_several(
    gateway: LiveServer,
    priced: None,
    bob: User,
    upstream: FakeOpenAI,
    sink: WebhookSink,
    settings: Any,
) -> None:
    import hashlib
    import hmac

    settings.WEBHOOK_SECRET = "alert-signing-secret"
    upstream.script(text="one", prompt_tokens=9600)  # $0.0096 + $0.000002: far above the estimate
    _, key = make_key(bob)
    budget = BudgetFactory(
        subject_kind="user",
        subject_id=str(bob.pk),
        limit=Decimal("0.01"),
        alert_webhook_url=f"{sink.root}/alerts",
    )

    first = burst(gateway.url, key, 1)
    _wait_for(lambda: len(sink.requests) >= 3)

    assert first[0].status_code == 200
    assert sorted(
        BudgetAlert.objects.filter(budget=budget).values_list("threshold", flat=True)
    ) == [50, 80, 95]
    assert AuditEvent.objects.filter(action="budget.threshold_crossed").count() == 3
    posted = sink.requests[0]
    expected = hmac.new(b"alert-signing-secret", posted.raw, hashlib.sha256).hexdigest()
    assert posted.headers["x-thinkwatch-signature"] == f"sha256={expected}"
    assert posted.body["subject"] == f"user:{bob.pk}"


def _wait_for(condition: Any, seconds: float = 5) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_it_lets_an_admin_reset_a_subjects_counters(
    gateway: LiveServer, priced: None, bob: User, alice: User
) -> None:
    api_key, key = make_key(bob)
    RateLimitRuleFactory(subject_kind="api_key", subject_id=str(api_key.pk), limit=1, window=3600)
    burst(gateway.url, key, 1)
    console = Client()
    console.force_login(alice)

    response = console.post(
        "/api/limits/reset",
        {"subject_kind": "api_key", "subject_id": str(api_key.pk), "reason": "customer demo"},
        content_type="application/json",
    )
    _wait_for(lambda: burst(gateway.url, key, 1)[0].status_code == 200)

    assert response.status_code == 200
    event = AuditEvent.objects.get(action="quota.reset")
    assert (event.actor, event.object_id, event.detail) == (
        "alice@example.com",
        str(api_key.pk),
        {"reason": "customer demo"},
    )


def test_it_restores_budget_spend_from_the_log(
    gateway: LiveServer, priced: None, bob: User
) -> None:
    from quotas import admission, logic
    from quotas.cache import load_quota_table

    api_key, key = make_key(bob)
    GatewayLog.objects.create(
        request_id="earlier",
        created_at=timezone.now(),
        user_id=bob.pk,
        api_key_id=api_key.pk,
        surface="ai_gateway",
        ingress="openai_chat",
        model=MODEL,
        status_code=200,
        cost_usd=Decimal("0.999999"),
    )
    BudgetFactory(subject_kind="user", subject_id=str(bob.pk), period="month", limit=Decimal("1"))

    asyncio.run(logic.reconcile(admission.counters(), load_quota_table()))
    responses = burst(gateway.url, key, 1)

    assert responses[0].status_code == 429
    assert responses[0].json()["error"]["code"] == "budget_exceeded"
