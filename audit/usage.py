"""Usage and cost reports: gateway records grouped by user, team, key, model, provider or
day over a period, and the spend of each budget in its current period.

Everything is aggregated by the database (GROUP BY over the indexed `created_at` range);
no record is loaded into Python. The caller passes the scope a user may see
(`accounts.access.log_filter`); the page, its CSV and `GET /api/usage` share these
functions, so they always agree. With CLICKHOUSE_URL the sums come from ClickHouse
(audit/clickhouse/usage.py), under the same scope.
"""

import csv
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any, Protocol, cast

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db.models import Count, F, Max, Q, QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from accounts.models import ApiKey, RoleAssignment, Team
from audit.models import GatewayLog
from providers.models import Provider
from quotas import periods
from quotas.models import Budget, QuotaReset

GROUPS = ("user", "team", "key", "model", "provider", "day")
_COLUMNS: dict[str, Any] = {
    "user": F("user_id"),
    "team": F("team_id"),
    "key": F("api_key_id"),
    "model": F("model"),
    "provider": F("provider"),
    "day": TruncDate("created_at"),
}
_NONE_LABELS = {
    "user": "(no user)",
    "team": "(no team)",
    "key": "(no key)",
    "model": "(no model)",
    "provider": "(no provider)",
    "day": "",
}
# Which log column a budget subject's spend is counted on (as quotas.logic counts it).
_BUDGET_COLUMNS = {
    "user": "user_id",
    "api_key": "api_key_id",
    "team": "team_id",
    "provider": "provider_id",
    "model": "model",
}
_COST_PLACES = Decimal(1).scaleb(-GatewayLog._meta.get_field("cost_usd").decimal_places)


@dataclass(frozen=True)
class Period:
    """Whole UTC days, both ends included."""

    start: date
    end: date

    @classmethod
    def between(cls, start: date | None, end: date | None) -> "Period":
        """The days asked for; by default this month so far. ValueError says what is wrong."""
        end = end or timezone.now().date()
        start = start or end.replace(day=1)
        if start > end:
            raise ValueError("The period's start must not be after its end.")
        return cls(start, end)

    @classmethod
    def parse(cls, start: str, end: str) -> "Period":
        try:
            first = date.fromisoformat(start) if start else None
            last = date.fromisoformat(end) if end else None
        except ValueError:
            raise ValueError("Give dates as YYYY-MM-DD.") from None
        return cls.between(first, last)

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time.min, UTC)

    @property
    def until(self) -> datetime:
        return datetime.combine(self.end + timedelta(days=1), time.min, UTC)


@dataclass
class Row:
    key: str | None  # the group's value: an id, a model or provider name, a day
    label: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


@dataclass
class Report:
    group_by: str
    period: Period
    rows: list[Row]
    totals: Row


def _sums() -> dict[str, Any]:
    return {
        "requests": Count("id"),
        "errors": Count("id", filter=Q(status_code__gte=400)),
        "input_tokens": Sum("input_tokens"),
        "output_tokens": Sum("output_tokens"),
        "cost_usd": Sum("cost_usd"),
    }


def _row(key: str | None, label: str, sums: Mapping[str, Any]) -> Row:
    return Row(
        key=key,
        label=label,
        requests=sums["requests"],
        errors=sums["errors"],
        input_tokens=sums["input_tokens"] or 0,
        output_tokens=sums["output_tokens"] or 0,
        # The column's own precision, whatever the database's sum returns.
        cost_usd=(sums["cost_usd"] or Decimal(0)).quantize(_COST_PLACES),
    )


def _labels(group_by: str, groups: list[Mapping[str, Any]]) -> dict[Any, str]:
    """Readable names for the grouped ids; the trail outlives what it names."""
    ids = [g["group"] for g in groups if g["group"] is not None]
    if group_by == "user":
        return {i: f"deleted user {i}" for i in ids} | dict(
            get_user_model().objects.filter(pk__in=ids).values_list("pk", "username")
        )
    if group_by == "team":
        return {i: f"deleted team {i}" for i in ids} | dict(
            Team.objects.filter(pk__in=ids).values_list("pk", "name")
        )
    if group_by == "key":
        names = dict(ApiKey.objects.filter(pk__in=ids).values_list("pk", "name"))
        return {
            g["group"]: f"{names.get(g['group'], 'deleted key')} ({g['prefix']}…)"
            for g in groups
            if g["group"] is not None
        }
    if group_by == "day":
        return {i: i.isoformat() for i in ids}
    return {i: i for i in ids if i}


def _grouped(
    scope: Q, group_by: str, period: Period
) -> tuple[list[Mapping[str, Any]], Mapping[str, Any]]:
    """The sums per group, and over all of them."""
    if settings.CLICKHOUSE_URL:
        from audit.clickhouse import usage

        groups: list[Mapping[str, Any]] = list(
            usage.grouped(scope, group_by, period.since, period.until)
        )
        names = ("requests", "errors", "input_tokens", "output_tokens", "cost_usd")
        return groups, {name: sum(g[name] for g in groups) for name in names}
    records: QuerySet[GatewayLog] = GatewayLog.objects.filter(
        scope, created_at__gte=period.since, created_at__lt=period.until
    )
    extra = {"prefix": Max("api_key_prefix")} if group_by == "key" else {}
    grouped = records.values(group=_COLUMNS[group_by]).annotate(**_sums(), **extra)
    return list(grouped.order_by()), records.aggregate(**_sums())


def report(scope: Q, group_by: str, period: Period) -> Report:
    if group_by not in GROUPS:
        raise ValueError(f"Group by one of {', '.join(GROUPS)}.")
    groups, totals = _grouped(scope, group_by, period)
    labels = _labels(group_by, groups)
    rows = [
        _row(
            None if g["group"] is None else str(g["group"]),
            labels.get(g["group"]) or _NONE_LABELS[group_by],
            g,
        )
        for g in groups
    ]
    if group_by == "day":
        rows.sort(key=lambda r: r.key or "")
    else:
        rows.sort(key=lambda r: (-r.cost_usd, -r.requests, r.label))
    return Report(group_by, period, rows, _row(None, "Total", totals))


# --- CSV ------------------------------------------------------------------------------------

# After the first column, named for the grouping (model, user, ...): the group's label.
CSV_COLUMNS = ("id", "requests", "errors", "input_tokens", "output_tokens", "cost_usd")
# A spreadsheet runs a cell starting with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: object) -> str:
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class Writable(Protocol):
    def write(self, text: str, /) -> Any: ...


def write_csv(result: Report, out: Writable) -> None:
    writer = csv.writer(out)
    writer.writerow([result.group_by, *CSV_COLUMNS])
    for row in [*result.rows, result.totals]:
        writer.writerow(
            _cell(v)
            for v in (
                row.label,
                row.key,
                row.requests,
                row.errors,
                row.input_tokens,
                row.output_tokens,
                row.cost_usd,
            )
        )


# --- budgets --------------------------------------------------------------------------------


@dataclass
class BudgetStatus:
    budget_id: int
    label: str  # e.g. team:budget/monthly
    subject: str  # the counted subject, e.g. user:12 (a role's budget counts per holder)
    name: str  # who or what that is, readable
    period_key: str  # e.g. 2026-11
    unit: str
    limit: Decimal
    spent: Decimal

    @property
    def percent(self) -> float:
        return float(self.spent / self.limit * 100) if self.limit else 0.0


def _admits(condition: Q, row: dict[str, Any]) -> bool:
    """Whether a log record with these values passes `condition`: the plain equality, `in`
    and `pk__isnull` lookups `log_filter` builds. Anything else is refused rather than guessed."""
    results = []
    for child in condition.children:
        if isinstance(child, Q):
            results.append(_admits(child, row))
            continue
        lookup, value = cast(tuple[str, Any], child)
        field, _, operator = lookup.partition("__")
        if operator == "in":
            results.append(row.get(field) in value)
        elif operator in ("", "exact"):
            results.append(row.get(field) == value)
        elif (field, operator) == ("pk", "isnull"):
            results.append(not value)  # log_filter's "every record": each has a key
        else:
            raise ValueError(f"cannot evaluate the lookup {lookup!r}")
    passed = all(results) if condition.connector == Q.AND else any(results)
    return passed != condition.negated


def _counted(budgets: list[Budget]) -> list[tuple[Budget, str, str]]:
    """(budget, kind, id) per counted subject: a role's budget counts for each holder."""
    roles = [b.subject_id for b in budgets if b.subject_kind == "role"]
    holders: dict[str, set[int]] = defaultdict(set)
    for role_id, user_id in RoleAssignment.objects.filter(role_id__in=roles).values_list(
        "role_id", "user_id"
    ):
        holders[str(role_id)].add(user_id)
    counted = []
    for budget in budgets:
        if budget.subject_kind == "role":
            counted += [(budget, "user", str(u)) for u in sorted(holders[budget.subject_id])]
        elif budget.subject_kind in _BUDGET_COLUMNS:
            counted.append((budget, budget.subject_kind, budget.subject_id))
    return counted


def _visible(scope: Q, kind: str, ident: str, keys: dict[str, tuple[Any, Any]]) -> bool:
    """A subject's spend may be shown when every record it counts is one the user may see:
    a record of that user, of that team, of that key (its owner and team), or any record
    (a model or provider: only for those who see everything)."""
    number = int(ident) if ident.isdigit() else None
    if kind == "user":
        row = {"user_id": number}
    elif kind == "team":
        row = {"team_id": number}
    elif kind == "api_key":
        owner, team = keys.get(ident, (None, None))
        row = {"user_id": owner, "team_id": team}
    else:
        row = {}
    return _admits(scope, row)


def _spend(kind: str, period: str, unit: str, idents: set[str], now: datetime) -> dict[str, Any]:
    """Each subject's spend this period, since its last reset (QuotaReset), in one GROUP BY
    for all subjects plus one query per subject reset during the period."""
    column = _BUDGET_COLUMNS[kind]
    start, end = periods.start_of(period, now), periods.end_of(period, now)
    resets = dict(
        QuotaReset.objects.filter(subject_kind=kind, subject_id__in=idents, at__gte=start)
        .values_list("subject_id")
        .annotate(last=Max("at"))
    )
    if settings.CLICKHOUSE_URL:
        from audit.clickhouse.usage import spent

        name = "cost_usd" if unit == "usd" else "weighted_tokens"
        spend: dict[str, Any] = spent(column, name, start, end, idents - set(resets))
        for ident, since in resets.items():
            spend |= spent(column, name, since, end, {ident})
        return spend
    measure = Sum("cost_usd" if unit == "usd" else "weighted_tokens")
    period_records = GatewayLog.objects.filter(created_at__lt=end)
    rows = (
        period_records.filter(created_at__gte=start, **{f"{column}__in": idents - set(resets)})
        .values(column)
        .annotate(spent=measure)
        .order_by()
    )
    spend = {str(row[column]): row["spent"] for row in rows}
    for ident, since in resets.items():
        later = period_records.filter(created_at__gte=since, **{column: ident})
        spend[ident] = later.aggregate(spent=measure)["spent"]
    return spend


def _names(counted: list[tuple[Budget, str, str]]) -> dict[tuple[str, str], str]:
    wanted: dict[str, set[str]] = defaultdict(set)
    for _, kind, ident in counted:
        wanted[kind].add(ident)
    sources: dict[str, Any] = {
        "user": (get_user_model(), "username"),
        "team": (Team, "name"),
        "api_key": (ApiKey, "name"),
        "provider": (Provider, "name"),
    }
    names = {("model", ident): ident for ident in wanted["model"]}
    for kind, (model, field) in sources.items():
        numeric = [i for i in wanted[kind] if i.isdigit()]
        for pk, name in model.objects.filter(pk__in=numeric).values_list("pk", field):
            names[(kind, str(pk))] = name
    return names


def budget_statuses(scope: Q, now: datetime | None = None) -> list[BudgetStatus]:
    """Each live budget's spend in its current period, for the subjects `scope` fully
    covers. MCP server budgets are left out: tool calls carry no cost."""
    now = now or timezone.now()
    live = Q(enabled=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    budgets = list(Budget.objects.filter(live))
    counted = _counted(budgets)
    key_ids = [i for _, kind, i in counted if kind == "api_key" and i.isdigit()]
    keys = {
        str(pk): (owner, team)
        for pk, owner, team in ApiKey.objects.filter(pk__in=key_ids).values_list(
            "pk", "owner_id", "team_id"
        )
    }
    counted = [c for c in counted if _visible(scope, c[1], c[2], keys)]
    wanted: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for budget, kind, ident in counted:
        wanted[(kind, budget.period, budget.unit)].add(ident)
    spend = {group: _spend(*group, idents, now) for group, idents in wanted.items()}
    names = _names(counted)
    return [
        BudgetStatus(
            budget_id=budget.pk,
            label=budget.label,
            subject=f"{kind}:{ident}",
            name=names.get((kind, ident), f"{kind} {ident}"),
            period_key=periods.key_of(budget.period, now),
            unit=budget.unit,
            limit=budget.limit,
            spent=Decimal(spend[(kind, budget.period, budget.unit)].get(ident) or 0),
        )
        for budget, kind, ident in counted
    ]
