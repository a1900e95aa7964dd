"""The warm path: no database query, whatever the outcome."""

import threading
from collections.abc import Iterator
from decimal import Decimal

import openai
import pytest
from django.db.backends.utils import CursorWrapper

from providers.models import Provider
from tests.conftest import logged
from tests.factories import AIModelFactory, RouteFactory

MESSAGES = [{"role": "user", "content": "Say hello."}]


class QueryRecorder:
    """Every SQL statement run in this process, except the log writer's own inserts."""

    def __init__(self) -> None:
        self.statements: list[tuple[str, str]] = []

    def record(self, sql: str) -> None:
        thread = threading.current_thread().name
        if thread != "gateway-writer":
            self.statements.append((thread, sql))


@pytest.fixture
def queries(monkeypatch: pytest.MonkeyPatch) -> Iterator[QueryRecorder]:
    recorder = QueryRecorder()
    original = CursorWrapper._execute_with_wrappers

    def spy(self, sql, params, many, executor):  # type: ignore[no-untyped-def]
        recorder.record(sql)
        return original(self, sql, params, many, executor)

    monkeypatch.setattr(CursorWrapper, "_execute_with_wrappers", spy)
    yield recorder


@pytest.fixture
def warm_client(
    client: openai.OpenAI, openai_provider: Provider, queries: QueryRecorder
) -> openai.OpenAI:
    """The client after one request has filled the gateway's caches."""
    RouteFactory(model=AIModelFactory(model_id="gpt-4o-mini"), provider=openai_provider)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert queries.statements, "the recorder saw nothing on the cold request: it is not recording"
    logged()
    queries.statements.clear()
    return client


def test_it_runs_no_query_on_a_warm_request(
    warm_client: openai.OpenAI, queries: QueryRecorder
) -> None:
    warm_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)

    assert queries.statements == []
    assert len(logged()) == 2


def test_it_runs_no_query_on_a_warm_stream(
    warm_client: openai.OpenAI, queries: QueryRecorder
) -> None:
    list(warm_client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))

    assert queries.statements == []
    assert len(logged()) == 2


def test_it_runs_no_query_for_a_repeated_bad_key(
    gateway,
    openai_provider: Provider,
    queries: QueryRecorder,  # type: ignore[no-untyped-def]
) -> None:
    bad = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="tw-" + "f" * 96, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    queries.statements.clear()

    with pytest.raises(openai.AuthenticationError):
        bad.models.list()

    assert queries.statements == []


def test_it_prices_a_registered_model_in_the_response_header(
    client: openai.OpenAI, openai_provider: Provider
) -> None:
    model = AIModelFactory(
        model_id="gpt-4o-mini", input_price=Decimal("1.00"), output_price=Decimal("2.00")
    )
    RouteFactory(model=model, provider=openai_provider)

    response = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )

    usage = response.parse().usage
    assert usage is not None
    expected = (usage.prompt_tokens * 1.00 + usage.completion_tokens * 2.00) / 1_000_000
    assert float(response.headers["x-thinkwatch-cost-usd"]) == pytest.approx(expected)
    assert response.headers["x-thinkwatch-provider"] == "openai"
    assert float(logged()[0].cost_usd) == pytest.approx(expected)


def test_it_runs_no_query_on_a_warm_request_with_limits_and_budgets(
    client: openai.OpenAI, openai_provider: Provider, queries: QueryRecorder, bob: object
) -> None:
    from tests.factories import BudgetFactory, RateLimitRuleFactory

    RouteFactory(model=AIModelFactory(model_id="gpt-4o-mini"), provider=openai_provider)
    RateLimitRuleFactory(subject_kind="user", subject_id=str(bob.pk), limit=100)  # type: ignore[attr-defined]
    RateLimitRuleFactory(
        subject_kind="model", subject_id="gpt-4o-mini", metric="tokens", limit=10**9
    )
    BudgetFactory(subject_kind="user", subject_id=str(bob.pk), limit=1000)  # type: ignore[attr-defined]
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    logged()
    queries.statements.clear()

    response = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES
    )

    assert queries.statements == []
    assert response.headers["x-ratelimit-remaining-requests"] == "98"
