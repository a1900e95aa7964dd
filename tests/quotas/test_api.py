"""`/api/limits/...` and the console pages for limits."""

import threading
import time
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from providers.models import Provider
from quotas.models import Budget, RateLimitRule
from tests.conftest import LiveServer
from tests.factories import (
    AIModelFactory,
    BudgetFactory,
    RateLimitRuleFactory,
    RoleFactory,
    RouteFactory,
    UserFactory,
    make_key,
)
from tests.fakes.openai_upstream import FakeOpenAI

MODEL = "gpt-4o-mini"


@pytest.fixture
def api(alice: User) -> Client:
    _, key = make_key(alice, surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def post(api: Client, path: str, body: dict[str, Any]) -> Any:
    return api.post(path, body, content_type="application/json")


def test_it_creates_a_rule_with_a_named_window(api: Client, bob: User) -> None:
    response = post(
        api,
        "/api/limits/rules",
        {"subject_kind": "user", "subject_id": str(bob.pk), "window": "5h", "limit": 100},
    )

    assert response.status_code == 201
    assert (response.json()["window"], response.json()["label"]) == ("5h", "user:requests/5h")
    assert RateLimitRule.objects.get().window == 5 * 3600


@pytest.mark.parametrize("window", ["2m", "60", "1y", ""])
def test_it_refuses_any_other_window_clearly(api: Client, bob: User, window: str) -> None:
    response = post(
        api,
        "/api/limits/rules",
        {"subject_kind": "user", "subject_id": str(bob.pk), "window": window, "limit": 1},
    )

    assert response.status_code == 422
    assert "'1m', '5m', '1h', '5h', '1d' or '1w'" in response.json()["detail"][0]["msg"]


@pytest.mark.parametrize("days", [91, -1])
def test_it_refuses_an_expiry_outside_the_next_90_days(api: Client, bob: User, days: int) -> None:
    expires = (timezone.now() + timedelta(days=days)).isoformat()
    body = {
        "subject_kind": "user",
        "subject_id": str(bob.pk),
        "window": "1m",
        "limit": 1,
        "expires_at": expires,
    }

    response = post(api, "/api/limits/rules", body)

    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "expires_at"


def test_it_refuses_a_second_rule_in_the_same_slot(api: Client, bob: User) -> None:
    body = {"subject_kind": "user", "subject_id": str(bob.pk), "window": "1m", "limit": 1}
    post(api, "/api/limits/rules", body)

    assert post(api, "/api/limits/rules", body).status_code == 422


def test_it_refuses_a_subject_that_does_not_exist(api: Client) -> None:
    response = post(
        api,
        "/api/limits/rules",
        {"subject_kind": "user", "subject_id": "999999", "window": "1m", "limit": 1},
    )

    assert response.status_code == 422
    assert "no user with id 999999" in response.json()["detail"]


def test_it_applies_one_rule_to_many_subjects_and_updates_on_the_next_bulk(api: Client) -> None:
    users = UserFactory.create_batch(3)
    subjects = [{"subject_kind": "user", "subject_id": str(u.pk)} for u in users]

    post(api, "/api/limits/rules/bulk", {"subjects": subjects, "window": "1h", "limit": 100})
    again = post(api, "/api/limits/rules/bulk", {"subjects": subjects, "window": "1h", "limit": 50})

    assert again.status_code == 201
    assert sorted(RateLimitRule.objects.values_list("limit", flat=True)) == [50, 50, 50]


def test_it_applies_one_budget_to_many_subjects(api: Client) -> None:
    role = RoleFactory()
    subjects = [
        {"subject_kind": "role", "subject_id": str(role.pk)},
        {"subject_kind": "model", "subject_id": "gpt-4o"},
    ]

    response = post(
        api, "/api/limits/budgets/bulk", {"subjects": subjects, "period": "week", "limit": "25.50"}
    )

    assert response.status_code == 201
    assert [(b.label, b.limit) for b in Budget.objects.order_by("subject_kind")] == [
        ("model:budget/weekly", Decimal("25.5")),
        ("role:budget/weekly", Decimal("25.5")),
    ]


def test_it_disables_and_deletes_rules(api: Client, bob: User) -> None:
    rule = RateLimitRuleFactory(subject_kind="user", subject_id=str(bob.pk))

    patched = api.patch(
        f"/api/limits/rules/{rule.pk}", {"enabled": False}, content_type="application/json"
    )
    deleted = api.delete(f"/api/limits/rules/{rule.pk}")

    assert patched.json()["enabled"] is False
    assert deleted.status_code == 204
    assert not RateLimitRule.objects.exists()


def test_it_reports_usage_spend_and_reservations_in_flight(
    api: Client, gateway: LiveServer, openai_provider: Provider, bob: User, upstream: FakeOpenAI
) -> None:
    RouteFactory(
        model=AIModelFactory(model_id=MODEL, input_price=Decimal("1"), output_price=Decimal("2")),
        provider=openai_provider,
    )
    api_key, key = make_key(bob)
    RateLimitRuleFactory(subject_kind="api_key", subject_id=str(api_key.pk), limit=10)
    BudgetFactory(
        subject_kind="api_key", subject_id=str(api_key.pk), period="day", limit=Decimal("1")
    )
    chat = {"model": MODEL, "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]}
    httpx.post(
        f"{gateway.url}/v1/chat/completions", json=chat, headers={"Authorization": f"Bearer {key}"}
    )
    upstream.script(delay=3)
    slow = threading.Thread(
        target=httpx.post,
        args=(f"{gateway.url}/v1/chat/completions",),
        kwargs={"json": chat, "headers": {"Authorization": f"Bearer {key}"}, "timeout": 10},
    )
    slow.start()

    usage = _eventually(
        lambda: api.get(f"/api/limits/usage?subject_kind=api_key&subject_id={api_key.pk}").json()
    )
    slow.join()

    window, budget = usage["windows"][0], usage["budgets"][0]
    assert (window["rule"], window["used"], window["remaining"]) == ("api_key:requests/1m", 2, 8)
    assert budget["spent"] > 0
    assert budget["reserved_in_flight"] > 0
    assert budget["remaining"] == pytest.approx(1 - budget["spent"] - budget["reserved_in_flight"])


def _eventually(read: Any, seconds: float = 3) -> Any:
    """The console of an embedded installation reads counts the gateway writes each second."""
    deadline = time.monotonic() + seconds
    while True:
        usage = read()
        if (
            usage["windows"]
            and usage["windows"][0]["used"] == 2
            and usage["budgets"][0]["reserved_in_flight"]
        ):
            return usage
        assert time.monotonic() < deadline, usage
        time.sleep(0.1)


@pytest.mark.parametrize(
    "page",
    [
        "/admin/quotas/ratelimitrule/",
        "/admin/quotas/budget/",
        "/admin/quotas/budgetalert/",
        "/admin/quotas/quotareset/",
        "/admin/accounts/role/",
        "/admin/audit/auditevent/",
        "/admin/quotas/ratelimitrule/add/",
    ],
)
def test_it_renders_the_limit_pages(alice: User, bob: User, page: str) -> None:
    RateLimitRuleFactory(subject_kind="user", subject_id=str(bob.pk))
    BudgetFactory(subject_kind="user", subject_id=str(bob.pk))
    console = Client()
    console.force_login(alice)

    assert console.get(page).status_code == 200
