"""The counting engine itself, with the clock passed in. The embedded run tests the
in-process backend; the PostgreSQL + Redis run tests the Redis (Lua) backend."""

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from django.conf import settings

from quotas.counters import BudgetCheck, Cost, MemoryCounters, RedisCounters, WindowCheck

T0 = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC).timestamp()  # a minute boundary
HOLD = 3600.0
FREE = Cost(tokens=0, usd=0)


def window(
    limit: int, seconds: int = 60, requests: bool = True, subject: str = "user:1"
) -> WindowCheck:
    metric = "requests" if requests else "tokens"
    return WindowCheck(
        f"ai_gateway|{subject}|{metric}|{seconds}",
        f"user:{metric}/{seconds}",
        requests,
        seconds,
        limit,
    )


def budget(
    limit: float, period: str = "day", usd: bool = True, subject: str = "user:1"
) -> BudgetCheck:
    return BudgetCheck(7, subject, f"user:budget/{period}", period, usd, limit)


@pytest.fixture
async def counters() -> AsyncIterator[MemoryCounters | RedisCounters]:
    if not settings.REDIS_URL:
        yield MemoryCounters()
        return
    from tests.conftest import forget_quota_counts
    from thinkwatch.lib import redis

    forget_quota_counts()
    yield RedisCounters(redis.client)
    forget_quota_counts()
    await redis.client().aclose()


async def admit_many(counters, windows, budgets=(), cost=FREE, now=T0, n=1):  # type: ignore[no-untyped-def]
    return [await counters.admit(list(windows), list(budgets), cost, now, HOLD) for _ in range(n)]


async def test_it_admits_exactly_the_limit_of_requests(counters) -> None:  # type: ignore[no-untyped-def]
    verdicts = await admit_many(counters, [window(3)], n=5)

    assert [v.admitted for v in verdicts] == [True, True, True, False, False]
    assert verdicts[3].label == "user:requests/60"


async def test_it_debits_nothing_when_one_rule_refuses(counters) -> None:  # type: ignore[no-untyped-def]
    loose, tight = window(100, seconds=3600), window(1)
    await admit_many(counters, [tight])

    refused = await admit_many(counters, [loose, tight])

    assert not refused[0].admitted
    assert await counters.window_usage(loose, T0) == 0


async def test_it_counts_concurrent_admissions_exactly(counters) -> None:  # type: ignore[no-untyped-def]
    rule = window(50)

    verdicts = await asyncio.gather(
        *(counters.admit([rule], [], FREE, T0, HOLD) for _ in range(200))
    )

    assert sum(v.admitted for v in verdicts) == 50


async def test_it_slides_bucket_by_bucket(counters) -> None:  # type: ignore[no-untyped-def]
    rule = window(2)  # one-second buckets
    await admit_many(counters, [rule], now=T0 + 0.5)
    await admit_many(counters, [rule], now=T0 + 30.5)

    full = await admit_many(counters, [rule], now=T0 + 59.9)
    first_gone = await admit_many(counters, [rule], now=T0 + 60.0)
    still_full = await admit_many(counters, [rule], now=T0 + 89.9)

    assert not full[0].admitted
    assert full[0].retry_after == 1  # the bucket of T0+0.5 leaves at T0+60
    assert first_gone[0].admitted
    assert not still_full[0].admitted


async def test_it_tells_how_long_until_a_request_fits(counters) -> None:  # type: ignore[no-untyped-def]
    rule = window(1, seconds=3600)  # one-minute buckets
    await admit_many(counters, [rule], now=T0 + 10)

    refused = await admit_many(counters, [rule], now=T0 + 1800)

    assert refused[0].retry_after == 3600 - 1800


async def test_it_refuses_a_token_window_only_once_exhausted(counters) -> None:  # type: ignore[no-untyped-def]
    rule = window(100, requests=False)
    first = (await admit_many(counters, [rule]))[0]
    await counters.settle(first.reservation, 60, 0, T0)
    second = (await admit_many(counters, [rule]))[0]
    await counters.settle(second.reservation, 60, 0, T0)

    third = await admit_many(counters, [rule])

    assert first.admitted and second.admitted  # 60 < 100 when the second came
    assert not third[0].admitted
    assert await counters.window_usage(rule, T0) == 120


async def test_it_reserves_worst_cases_so_concurrent_requests_cannot_overshoot(counters) -> None:  # type: ignore[no-untyped-def]
    cap = budget(10.0)

    verdicts = await asyncio.gather(
        *(counters.admit([], [cap], Cost(0, 3.0), T0, HOLD) for _ in range(10))
    )

    assert sum(v.admitted for v in verdicts) == 3
    assert await counters.budget_usage(cap, T0) == (0.0, 9.0)


async def test_it_settles_reservations_to_the_real_cost(counters) -> None:  # type: ignore[no-untyped-def]
    cap = budget(10.0)
    held = await admit_many(counters, [], [cap], Cost(0, 3.0), n=3)
    for verdict in held:
        await counters.settle(verdict.reservation, 0, 2.0, T0)

    more = await admit_many(counters, [], [cap], Cost(0, 3.0), n=2)

    assert [v.admitted for v in more] == [True, False]  # 6 spent + 3 fits, + 3 more does not
    assert await counters.budget_usage(cap, T0) == (6.0, 3.0)


async def test_it_refuses_an_exhausted_budget_until_the_next_period(counters) -> None:  # type: ignore[no-untyped-def]
    cap = budget(5.0, period="day")
    verdict = (await admit_many(counters, [], [cap], Cost(0, 5.0)))[0]
    await counters.settle(verdict.reservation, 0, 5.0, T0)

    refused = await admit_many(counters, [], [cap], Cost(0, 0.01), now=T0)
    next_day = await admit_many(counters, [], [cap], Cost(0, 0.01), now=T0 + 12 * 3600)

    assert not refused[0].admitted
    assert refused[0].retry_after == 12 * 3600  # until midnight UTC
    assert next_day[0].admitted


@pytest.mark.parametrize(
    ("period", "last_moment", "first_moment_after"),
    [
        ("day", datetime(2026, 11, 23, 23, 59, 59, tzinfo=UTC), datetime(2026, 11, 24, tzinfo=UTC)),
        (
            "week",
            datetime(2026, 11, 29, 23, 59, 59, tzinfo=UTC),
            datetime(2026, 11, 30, tzinfo=UTC),
        ),
        (
            "month",
            datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC),
            datetime(2026, 12, 1, tzinfo=UTC),
        ),
    ],
)
async def test_it_starts_each_calendar_period_afresh(
    counters, period: str, last_moment: datetime, first_moment_after: datetime
) -> None:  # type: ignore[no-untyped-def]
    cap = budget(1.0, period=period)
    verdict = (await admit_many(counters, [], [cap], Cost(0, 1.0), now=last_moment.timestamp()))[0]
    await counters.settle(verdict.reservation, 0, 1.0, last_moment.timestamp())

    before = await admit_many(counters, [], [cap], Cost(0, 0.5), now=last_moment.timestamp())
    after = await admit_many(counters, [], [cap], Cost(0, 0.5), now=first_moment_after.timestamp())

    assert (before[0].admitted, after[0].admitted) == (False, True)


async def test_it_reports_each_threshold_once_even_when_one_request_crosses_several(
    counters,
) -> None:  # type: ignore[no-untyped-def]
    cap = budget(100.0)
    big = (await admit_many(counters, [], [cap], Cost(0, 96.0)))[0]
    crossed = await counters.settle(big.reservation, 0, 96.0, T0)
    small = (await admit_many(counters, [], [cap], Cost(0, 1.0)))[0]
    again = await counters.settle(small.reservation, 0, 1.0, T0)
    last = (await admit_many(counters, [], [cap], Cost(0, 3.0)))[0]
    final = await counters.settle(last.reservation, 0, 3.0, T0)

    assert [c.threshold for c in crossed] == [50, 80, 95]
    assert again == []
    assert [(c.threshold, c.spent) for c in final] == [(100, 100.0)]


async def test_it_frees_the_reservation_of_a_request_that_never_settled(counters) -> None:  # type: ignore[no-untyped-def]
    cap = budget(10.0)
    await admit_many(counters, [], [cap], Cost(0, 10.0))

    blocked = await admit_many(counters, [], [cap], Cost(0, 10.0), now=T0 + 10)
    later = await admit_many(counters, [], [cap], Cost(0, 10.0), now=T0 + HOLD + 1)

    assert (blocked[0].admitted, later[0].admitted) == (False, True)


async def test_it_resets_one_subject_only(counters) -> None:  # type: ignore[no-untyped-def]
    mine, theirs = window(1, subject="user:1"), window(1, subject="user:12")
    await admit_many(counters, [mine, theirs])

    await counters.reset("user:1")

    assert (await counters.window_usage(mine, T0), await counters.window_usage(theirs, T0)) == (
        0,
        1,
    )


async def test_it_reports_the_tightest_rules_remaining(counters) -> None:  # type: ignore[no-untyped-def]
    verdict = (await admit_many(counters, [window(10), window(100, seconds=3600)]))[0]

    assert verdict.limits["requests"][:2] == (10, 9)


async def test_it_raises_spend_to_what_the_log_says_but_never_lowers_it(counters) -> None:  # type: ignore[no-untyped-def]
    cap = budget(100.0)
    verdict = (await admit_many(counters, [], [cap], Cost(0, 30.0)))[0]
    await counters.settle(verdict.reservation, 0, 30.0, T0)

    await counters.raise_spend(cap, "2026-11-23", 20.0)
    lower = await counters.budget_usage(cap, T0)
    await counters.raise_spend(cap, "2026-11-23", 70.0)
    higher = await counters.budget_usage(cap, T0)

    assert (lower[0], higher[0]) == (30.0, 70.0)
