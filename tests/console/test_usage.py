"""Usage and cost: the page, its CSV export, the budgets beside it, and GET /api/usage."""

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import time_machine
from django.contrib.auth.models import User
from django.test import Client

from accounts.models import Team
from quotas.models import QuotaReset
from tests.console.conftest import GatewayLogFactory, signed_in
from tests.factories import BudgetFactory, make_key

MARCH = "start=2026-03-01&end=2026-03-31"


def at(day: int, month: int = 3) -> datetime:
    return datetime(2026, month, day, 12, 0, tzinfo=UTC)


def table(response: Any) -> list[tuple[str, int, int, int, int, Decimal]]:
    return [
        (r.label, r.requests, r.errors, r.input_tokens, r.output_tokens, r.cost_usd)
        for r in response.context["report"].rows
    ]


@pytest.fixture
def march(bob: User, carol: User, platform: Team) -> None:
    """Bob's and Carol's traffic in March 2026, and some either side of it."""
    GatewayLogFactory(created_at=at(1), user_id=bob.pk, team_id=platform.pk, cost_usd=1)
    GatewayLogFactory(created_at=at(9), user_id=bob.pk, team_id=platform.pk, status_code=429)
    GatewayLogFactory(created_at=at(31), user_id=carol.pk, model="claude-x", cost_usd=2)
    GatewayLogFactory(created_at=at(28, month=2), user_id=bob.pk, cost_usd=50)
    GatewayLogFactory(created_at=at(1, month=4), user_id=carol.pk, cost_usd=50)


def test_it_sums_usage_by_model_over_the_period(alice: User, march: None) -> None:
    response = signed_in(alice).get(f"/admin/usage/?group_by=model&{MARCH}")

    assert table(response) == [
        ("claude-x", 1, 0, 10, 5, Decimal(2)),
        ("gpt-4o", 2, 1, 20, 10, Decimal("1.01")),
    ]
    totals = response.context["report"].totals
    assert (totals.requests, totals.errors, totals.cost_usd) == (3, 1, Decimal("3.01"))


@pytest.mark.parametrize(
    ("group_by", "labels"),
    [
        ("user", ["carol@example.com", "bob@example.com"]),
        ("team", ["(no team)", "platform"]),
        ("provider", ["openai"]),
        ("day", ["2026-03-01", "2026-03-09", "2026-03-31"]),
    ],
)
def test_it_groups_usage_by_what_was_asked(
    alice: User, march: None, group_by: str, labels: list[str]
) -> None:
    response = signed_in(alice).get(f"/admin/usage/?group_by={group_by}&{MARCH}")

    assert [row[0] for row in table(response)] == labels


def test_it_names_keys_by_name_and_prefix(alice: User, bob: User) -> None:
    key, _ = make_key(bob, name="bob laptop")
    GatewayLogFactory(
        created_at=at(2), user_id=bob.pk, api_key_id=key.pk, api_key_prefix=key.prefix
    )

    response = signed_in(alice).get(f"/admin/usage/?group_by=key&{MARCH}")

    assert [row[0] for row in table(response)] == [f"bob laptop ({key.prefix}…)"]


def test_it_covers_this_month_so_far_by_default(alice: User, march: None) -> None:
    with time_machine.travel(at(20), tick=False):
        response = signed_in(alice).get("/admin/usage/?group_by=user")

    assert table(response) == [("bob@example.com", 2, 1, 20, 10, Decimal("1.01"))]


def test_it_shows_a_developer_only_their_own_usage(bob: User, march: None) -> None:
    response = signed_in(bob).get(f"/admin/usage/?group_by=user&{MARCH}")

    assert [row[0] for row in table(response)] == ["bob@example.com"]


def test_it_shows_a_team_manager_their_teams_usage(dave: User, march: None) -> None:
    response = signed_in(dave).get(f"/admin/usage/?group_by=team&{MARCH}")

    assert table(response) == [("platform", 2, 1, 20, 10, Decimal("1.01"))]


def test_it_refuses_a_period_that_ends_before_it_starts(alice: User) -> None:
    response = signed_in(alice).get("/admin/usage/?start=2026-03-31&end=2026-03-01")

    assert response.status_code == 400
    assert "start must not be after its end" in response.content.decode()


def test_it_refuses_the_page_to_visitors_who_are_not_signed_in(db: None) -> None:
    response = Client().get("/admin/usage/")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- CSV ------------------------------------------------------------------------------------


def test_it_exports_the_current_view_as_csv(alice: User, march: None) -> None:
    response = signed_in(alice).get(f"/admin/usage/?group_by=model&{MARCH}&format=csv")

    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="thinkwatch-usage-model-2026-03-01-2026-03-31.csv"'
    )
    assert list(csv.reader(io.StringIO(response.content.decode()))) == [
        ["model", "id", "requests", "errors", "input_tokens", "output_tokens", "cost_usd"],
        ["claude-x", "claude-x", "1", "0", "10", "5", "2.0000000000"],
        ["gpt-4o", "gpt-4o", "2", "1", "20", "10", "1.0100000000"],
        ["Total", "", "3", "1", "30", "15", "3.0100000000"],
    ]


@pytest.mark.parametrize("name", ["=HYPERLINK(1)", "+cmd", "-2+3", "@SUM(A1)", "\tx"])
def test_it_defuses_cells_a_spreadsheet_would_run(alice: User, name: str) -> None:
    GatewayLogFactory(created_at=at(5), model=name)

    response = signed_in(alice).get(f"/admin/usage/?group_by=model&{MARCH}&format=csv")

    rows = list(csv.reader(io.StringIO(response.content.decode())))
    assert rows[1][:2] == ["'" + name, "'" + name]


# --- budgets --------------------------------------------------------------------------------


@pytest.fixture
def budgets(bob: User, carol: User, platform: Team) -> None:
    BudgetFactory(subject_kind="user", subject_id=str(bob.pk), limit=Decimal(10))
    BudgetFactory(subject_kind="user", subject_id=str(carol.pk), limit=Decimal(20))
    BudgetFactory(subject_kind="team", subject_id=str(platform.pk), limit=Decimal(4))
    BudgetFactory(subject_kind="model", subject_id="claude-x", limit=Decimal(100))


def spend(response: Any) -> dict[str, tuple[Decimal, Decimal]]:
    return {b.name: (b.spent, b.limit) for b in response.context["budgets"]}


def test_it_shows_each_budgets_spend_this_period(alice: User, march: None, budgets: None) -> None:
    with time_machine.travel(at(20), tick=False):
        response = signed_in(alice).get("/admin/usage/")

    assert spend(response) == {
        "bob@example.com": (Decimal("1.01"), Decimal(10)),
        "carol@example.com": (Decimal(2), Decimal(20)),
        "platform": (Decimal("1.01"), Decimal(4)),
        "claude-x": (Decimal(2), Decimal(100)),
    }


def test_it_shows_a_developer_only_the_budgets_of_their_own_spend(
    bob: User, march: None, budgets: None
) -> None:
    with time_machine.travel(at(20), tick=False):
        response = signed_in(bob).get("/admin/usage/")

    assert spend(response) == {"bob@example.com": (Decimal("1.01"), Decimal(10))}


def test_it_counts_a_budget_from_its_subjects_last_reset(alice: User, bob: User) -> None:
    BudgetFactory(subject_kind="user", subject_id=str(bob.pk), limit=Decimal(10))
    GatewayLogFactory(created_at=at(2), user_id=bob.pk, cost_usd=3)
    with time_machine.travel(at(10), tick=False):
        QuotaReset.objects.create(subject_kind="user", subject_id=str(bob.pk), reason="new job")
    GatewayLogFactory(created_at=at(12), user_id=bob.pk, cost_usd=2)

    with time_machine.travel(at(20), tick=False):
        response = signed_in(alice).get("/admin/usage/")

    assert spend(response) == {"bob@example.com": (Decimal(2), Decimal(10))}


# --- API ------------------------------------------------------------------------------------


def test_it_answers_the_api_with_the_pages_numbers(alice: User, march: None) -> None:
    response = signed_in(alice).get(f"/api/usage?group_by=model&{MARCH}")

    body = response.json()
    assert [(r["label"], r["requests"], Decimal(r["cost_usd"])) for r in body["rows"]] == [
        ("claude-x", 1, Decimal(2)),
        ("gpt-4o", 2, Decimal("1.01")),
    ]
    assert (body["start"], body["end"], body["totals"]["requests"]) == (
        "2026-03-01",
        "2026-03-31",
        3,
    )


def test_it_scopes_the_api_to_the_keys_owner(bob: User, march: None) -> None:
    _, key = make_key(bob, surfaces=["console"])

    response = Client().get(
        f"/api/usage?group_by=user&{MARCH}", headers={"Authorization": f"Bearer {key}"}
    )

    assert [r["label"] for r in response.json()["rows"]] == ["bob@example.com"]


def test_it_refuses_an_api_period_that_ends_before_it_starts(alice: User) -> None:
    response = signed_in(alice).get("/api/usage?start=2026-03-31&end=2026-03-01")

    assert response.status_code == 422
    assert response.json() == {"detail": "The period's start must not be after its end."}
