"""The response cache on the gateway: tenants kept apart, what makes a request different,
Cache-Control, TTL, scopes, the record, and rate limits."""

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import time_machine
from django.contrib.auth.models import User

from accounts.models import Team
from tests.cache.conftest import (
    ANSWERS,
    MODEL,
    OTHER_MODEL,
    QUESTION,
    ask,
    asked_and_stored,
    policy,
    said,
    stored,
)
from tests.conftest import LiveServer, logged
from tests.factories import RateLimitRuleFactory, make_key
from tests.fakes.openai_upstream import FakeOpenAI
from tests.gateway.test_hot_path import QueryRecorder

pytestmark = pytest.mark.usefixtures("priced")


# --- tenants ----------------------------------------------------------------------------------


def test_two_teams_asking_the_same_question_each_get_their_own_answer(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str, carol_blue_key: str
) -> None:
    upstream.script(answers=ANSWERS)
    policy()

    red_first = asked_and_stored(gateway, bob_red_key)
    blue_first = asked_and_stored(gateway, carol_blue_key)
    red_again = ask(gateway, bob_red_key)
    blue_again = ask(gateway, carol_blue_key)

    assert len(upstream.requests) == 2
    assert [said(r) for r in (red_first, blue_first)] == [ANSWERS[0], ANSWERS[1]]
    assert [said(r) for r in (red_again, blue_again)] == [ANSWERS[0], ANSWERS[1]]
    assert [r.headers["x-cache"] for r in (red_first, blue_first, red_again, blue_again)] == [
        "miss",
        "miss",
        "hit",
        "hit",
    ]


def test_many_concurrent_repeats_of_two_teams_each_get_their_own_teams_answer(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str, carol_blue_key: str
) -> None:
    upstream.script(answers=ANSWERS)
    policy()
    asked_and_stored(gateway, bob_red_key)
    asked_and_stored(gateway, carol_blue_key)
    keys = [bob_red_key, carol_blue_key] * 25

    async def all_at_once() -> list[httpx.Response]:
        body = {"model": MODEL, "messages": [{"role": "user", "content": QUESTION}]}
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as c:
            sends = [
                c.post(
                    f"{gateway.url}/v1/chat/completions",
                    json=body,
                    headers={"Authorization": f"Bearer {key}"},
                )
                for key in keys
            ]
            return list(await asyncio.gather(*sends))

    responses = asyncio.run(all_at_once())

    assert [said(r) for r in responses] == [ANSWERS[0], ANSWERS[1]] * 25
    assert {r.headers["x-cache"] for r in responses} == {"hit"}
    assert len(upstream.requests) == 2


def test_a_teammate_asking_the_same_question_gets_the_teams_answer(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str, dave_red_key: str
) -> None:
    upstream.script(answers=ANSWERS)
    policy()

    asked_and_stored(gateway, bob_red_key)
    daves = ask(gateway, dave_red_key)

    assert daves.headers["x-cache"] == "hit"
    assert said(daves) == ANSWERS[0]
    assert len(upstream.requests) == 1


def test_a_per_user_policy_keeps_teammates_apart(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str, dave_red_key: str
) -> None:
    upstream.script(answers=ANSWERS)
    policy(per_user=True)

    bobs = asked_and_stored(gateway, bob_red_key)
    daves = asked_and_stored(gateway, dave_red_key)
    bobs_again = ask(gateway, bob_red_key)

    assert [said(bobs), said(daves), said(bobs_again)] == [ANSWERS[0], ANSWERS[1], ANSWERS[0]]
    assert bobs_again.headers["x-cache"] == "hit"
    assert len(upstream.requests) == 2


def test_a_per_user_policy_keeps_a_service_key_apart_from_the_teams_people(
    gateway: LiveServer, upstream: FakeOpenAI, red: Team, bob_red_key: str
) -> None:
    upstream.script(answers=ANSWERS)
    policy(per_user=True)
    _, service_key = make_key(None, team=red, name="ci")

    asked_and_stored(gateway, bob_red_key)
    services = asked_and_stored(gateway, service_key)
    services_again = ask(gateway, service_key)

    assert said(services) == said(services_again) == ANSWERS[1]
    assert services_again.headers["x-cache"] == "hit"


def test_two_personal_keys_without_a_team_do_not_share(
    gateway: LiveServer, upstream: FakeOpenAI, bob: User
) -> None:
    upstream.script(answers=ANSWERS)
    policy()
    _, laptop = make_key(bob, name="laptop")
    _, desktop = make_key(bob, name="desktop")

    asked_and_stored(gateway, laptop)
    other = ask(gateway, desktop)

    assert other.headers["x-cache"] == "miss"
    assert said(other) == ANSWERS[1]


# --- a hit, and its record --------------------------------------------------------------------


def test_a_repeat_is_answered_from_the_cache_without_calling_the_provider(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    upstream.script(answers=ANSWERS)
    policy()

    first = asked_and_stored(gateway, bob_red_key)
    again = ask(gateway, bob_red_key)

    assert len(upstream.requests) == 1
    assert again.status_code == 200
    assert again.content == first.content
    assert again.headers["x-cache"] == "hit"
    assert again.headers["x-thinkwatch-cost-usd"] == "0"
    assert int(again.headers["age"]) >= 0
    assert again.headers["content-type"] == "application/json"


def test_a_hit_is_logged_at_no_cost_with_what_it_saved(
    gateway: LiveServer, bob_red_key: str
) -> None:
    cached = policy()

    asked_and_stored(gateway, bob_red_key)
    ask(gateway, bob_red_key)

    miss, hit = logged()
    assert miss.cache == {"status": "miss"}
    assert miss.cost_usd > 0
    assert (hit.status_code, hit.cost_usd, hit.input_tokens, hit.output_tokens) == (200, 0, 0, 0)
    assert hit.cache == {
        "status": "hit",
        "policy_id": cached.pk,
        "age_seconds": hit.cache["age_seconds"],
        "provider": "openai",
        "saved_usd": float(miss.cost_usd),
        "saved_input_tokens": miss.input_tokens,
        "saved_output_tokens": miss.output_tokens,
    }
    assert hit.cache["saved_usd"] > 0


@pytest.mark.parametrize(
    "changes",
    [
        {"model": OTHER_MODEL},
        {"temperature": 0.2},
        {"top_p": 0.5},
        {"seed": 7},
        {"max_tokens": 50},
        {"response_format": {"type": "json_object"}},
        {"tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]},
        {"tool_choice": "none"},
        {"messages": [{"role": "user", "content": QUESTION + " "}]},
        {
            "messages": [
                {"role": "system", "content": "Answer in French."},
                {"role": "user", "content": QUESTION},
            ]
        },
    ],
    ids=lambda changes: ",".join(changes),
)
def test_a_request_that_differs_in_anything_that_changes_the_answer_is_a_miss(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str, changes: dict[str, Any]
) -> None:
    upstream.script(answers=ANSWERS)
    policy()

    asked_and_stored(gateway, bob_red_key)
    different = ask(gateway, bob_red_key, **changes)

    assert different.headers["x-cache"] == "miss"
    assert said(different) == ANSWERS[1]
    assert len(upstream.requests) == 2


def test_the_order_of_a_requests_fields_does_not_matter(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    policy()
    asked_and_stored(gateway, bob_red_key, temperature=0)

    reordered = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        content=json.dumps(
            {"temperature": 0, "messages": [{"content": QUESTION, "role": "user"}], "model": MODEL}
        ),
        headers={"Authorization": f"Bearer {bob_red_key}", "Content-Type": "application/json"},
    )

    assert reordered.headers["x-cache"] == "hit"
    assert len(upstream.requests) == 1


# --- Cache-Control ---------------------------------------------------------------------------


def test_no_cache_goes_to_the_provider_and_keeps_the_fresh_answer(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    upstream.script(answers=ANSWERS)
    policy()

    asked_and_stored(gateway, bob_red_key)
    refreshed = ask(gateway, bob_red_key, headers={"Cache-Control": "no-cache"})
    stored()
    afterwards = ask(gateway, bob_red_key)

    assert refreshed.headers["x-cache"] == "miss"
    assert said(refreshed) == ANSWERS[1]
    assert said(afterwards) == ANSWERS[1]
    assert afterwards.headers["x-cache"] == "hit"
    assert logged()[1].cache == {"status": "miss", "reason": "no-cache"}


def test_no_store_neither_reads_nor_keeps(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    upstream.script(answers=ANSWERS)
    policy()

    asked_and_stored(gateway, bob_red_key)
    bypassed = ask(gateway, bob_red_key, headers={"Cache-Control": "max-age=0, No-Store"})
    stored()
    afterwards = ask(gateway, bob_red_key)

    assert bypassed.headers["x-cache"] == "bypass"
    assert said(bypassed) == ANSWERS[1]
    assert said(afterwards) == ANSWERS[0]
    assert logged()[1].cache == {"status": "bypass"}


def test_no_store_on_the_first_request_keeps_nothing(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    policy()

    ask(gateway, bob_red_key, headers={"Cache-Control": "no-store"})
    stored()
    afterwards = ask(gateway, bob_red_key)

    assert afterwards.headers["x-cache"] == "miss"
    assert len(upstream.requests) == 2


# --- TTL ---------------------------------------------------------------------------------------


def test_an_answer_expires_after_the_policys_ttl(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    upstream.script(answers=ANSWERS)
    policy(ttl_seconds=60)
    asked_and_stored(gateway, bob_red_key)

    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=50)):
        within = ask(gateway, bob_red_key)
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=61)):
        after = ask(gateway, bob_red_key)

    assert within.headers["x-cache"] == "hit"
    assert after.headers["x-cache"] == "miss"
    assert said(after) == ANSWERS[1]


def test_a_shorter_ttl_applies_to_what_is_already_stored(
    gateway: LiveServer, bob_red_key: str
) -> None:
    cached = policy(ttl_seconds=3600)
    asked_and_stored(gateway, bob_red_key)

    cached.ttl_seconds = 10
    cached.save()
    with time_machine.travel(datetime.now(UTC) + timedelta(seconds=11)):
        after = ask(gateway, bob_red_key)

    assert after.headers["x-cache"] == "miss"


# --- opt-in and scope ----------------------------------------------------------------------------


def test_without_a_policy_every_request_goes_to_the_provider_unmarked(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    first = asked_and_stored(gateway, bob_red_key)
    again = ask(gateway, bob_red_key)

    assert len(upstream.requests) == 2
    assert "x-cache" not in first.headers
    assert "x-cache" not in again.headers
    assert [record.cache for record in logged()] == [None, None]


def test_a_disabled_policy_caches_nothing(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    policy(enabled=False)

    asked_and_stored(gateway, bob_red_key)
    again = ask(gateway, bob_red_key)

    assert "x-cache" not in again.headers
    assert len(upstream.requests) == 2


def test_a_key_policy_covers_that_key_only(
    gateway: LiveServer, upstream: FakeOpenAI, bob: User, red: Team, dave_red_key: str
) -> None:
    key, plaintext = make_key(bob, team=red, name="cached")
    policy(api_key=key)

    asked_and_stored(gateway, plaintext)
    covered = ask(gateway, plaintext)
    other = ask(gateway, dave_red_key)

    assert covered.headers["x-cache"] == "hit"
    assert "x-cache" not in other.headers


def test_a_team_policy_covers_that_teams_keys_only(
    gateway: LiveServer, red: Team, bob_red_key: str, carol_blue_key: str
) -> None:
    policy(team=red)

    asked_and_stored(gateway, bob_red_key)
    asked_and_stored(gateway, carol_blue_key)
    reds = ask(gateway, bob_red_key)
    blues = ask(gateway, carol_blue_key)

    assert reds.headers["x-cache"] == "hit"
    assert "x-cache" not in blues.headers


def test_a_model_policy_covers_matching_models_only(gateway: LiveServer, bob_red_key: str) -> None:
    policy(model_pattern="gpt-4o*")

    asked_and_stored(gateway, bob_red_key)
    asked_and_stored(gateway, bob_red_key, model=OTHER_MODEL)
    matching = ask(gateway, bob_red_key)
    other = ask(gateway, bob_red_key, model=OTHER_MODEL)

    assert matching.headers["x-cache"] == "hit"
    assert "x-cache" not in other.headers


def test_the_most_specific_policy_wins(gateway: LiveServer, red: Team, bob_red_key: str) -> None:
    policy(name="everyone", ttl_seconds=3600)
    team_wide = policy(name="red", team=red, ttl_seconds=3600, per_user=True)

    asked_and_stored(gateway, bob_red_key)
    ask(gateway, bob_red_key)

    assert logged()[1].cache["policy_id"] == team_wide.pk


def test_a_model_the_key_may_no_longer_use_is_not_served_from_the_cache(
    gateway: LiveServer, bob: User, red: Team
) -> None:
    key, plaintext = make_key(bob, team=red, name="narrow")
    policy()
    asked_and_stored(gateway, plaintext)

    key.allowed_models = ["o3-*"]
    key.save()
    refused = ask(gateway, plaintext)

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"


def test_input_guardrails_still_apply_to_a_repeat(gateway: LiveServer, bob_red_key: str) -> None:
    from gateway.models import GuardrailRule

    policy()
    asked_and_stored(gateway, bob_red_key)

    GuardrailRule.objects.create(name="no capitals", kind="phrases", patterns=["capital"])
    refused = ask(gateway, bob_red_key)

    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "guardrail_blocked"


# --- what is not kept -----------------------------------------------------------------------------


def test_a_failed_answer_is_not_kept(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    policy()
    upstream.script(status=400, fail_times=1)  # relayed as it is, not retried

    failed = asked_and_stored(gateway, bob_red_key)
    second = asked_and_stored(gateway, bob_red_key)
    third = ask(gateway, bob_red_key)

    assert failed.status_code == 400
    assert [second.headers["x-cache"], third.headers["x-cache"]] == ["miss", "hit"]
    assert len(upstream.requests) == 2


def test_an_answer_larger_than_the_entry_limit_is_not_kept(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str, settings: Any
) -> None:
    settings.CACHE_MAX_ENTRY_BYTES = 200
    upstream.script(text="word " * 100)
    policy()

    asked_and_stored(gateway, bob_red_key)
    again = ask(gateway, bob_red_key)

    assert again.headers["x-cache"] == "miss"
    assert len(upstream.requests) == 2


# --- rate limits ----------------------------------------------------------------------------------


def test_hits_count_against_rate_limits(gateway: LiveServer, bob: User, red: Team) -> None:
    key, plaintext = make_key(bob, team=red, name="limited")
    RateLimitRuleFactory(subject_kind="api_key", subject_id=str(key.pk), limit=3, window=60)
    policy()

    first = asked_and_stored(gateway, plaintext)
    hits = [ask(gateway, plaintext) for _ in range(2)]
    over = ask(gateway, plaintext)

    assert first.headers["x-cache"] == "miss"
    assert [r.headers["x-cache"] for r in hits] == ["hit", "hit"]
    assert [r.headers["x-ratelimit-remaining-requests"] for r in hits] == ["1", "0"]
    assert over.status_code == 429
    assert over.json()["error"]["code"] == "rate_limited"


def test_hits_are_not_counted_when_the_policy_says_so(
    gateway: LiveServer, bob: User, red: Team
) -> None:
    key, plaintext = make_key(bob, team=red, name="limited")
    RateLimitRuleFactory(subject_kind="api_key", subject_id=str(key.pk), limit=1, window=60)
    policy(count_rate_limits=False)

    asked_and_stored(gateway, plaintext)
    hits = [ask(gateway, plaintext) for _ in range(3)]
    fresh = ask(gateway, plaintext, headers={"Cache-Control": "no-cache"})

    assert [r.status_code for r in hits] == [200, 200, 200]
    assert all("x-ratelimit-remaining-requests" not in r.headers for r in hits)
    assert fresh.status_code == 429


# --- the hot path -------------------------------------------------------------------------------


def test_a_hit_and_a_miss_run_no_database_query_once_warm(
    gateway: LiveServer, bob_red_key: str, queries: QueryRecorder
) -> None:
    policy()
    asked_and_stored(gateway, bob_red_key)
    logged()
    queries.statements.clear()

    hit = ask(gateway, bob_red_key)
    miss = ask(gateway, bob_red_key, temperature=0.3)
    stored()

    assert [hit.headers["x-cache"], miss.headers["x-cache"]] == ["hit", "miss"]
    assert queries.statements == []


def test_a_request_nested_too_deep_to_key_is_answered_without_the_cache(
    gateway: LiveServer, upstream: FakeOpenAI, bob_red_key: str
) -> None:
    policy()
    deep: Any = "bottom"
    for _ in range(300):
        deep = [deep]

    first = ask(gateway, bob_red_key, metadata={"deep": deep})
    stored()
    again = ask(gateway, bob_red_key, metadata={"deep": deep})

    assert [first.status_code, again.status_code] == [200, 200]
    assert again.headers["x-cache"] == "bypass"
    assert len(upstream.requests) == 2
    assert logged()[1].cache == {"status": "bypass", "reason": "unkeyable"}
