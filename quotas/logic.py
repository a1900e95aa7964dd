"""Quota operations off the hot path: alerts, reconciliation from the log, resets, usage."""

import hashlib
import hmac
import logging
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import orjson
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max, Sum
from django.utils import timezone

from accounts.runtime import setting
from audit.models import AuditEvent, GatewayLog
from quotas import periods
from quotas.cache import BudgetRow, QuotaTable, Rule, _budget, _window
from quotas.counters import BudgetCheck, Crossing, MemoryCounters, RedisCounters
from quotas.models import BudgetAlert, QuotaReset, SubjectKind
from thinkwatch import metrics
from thinkwatch.lib.db import off_loop

logger = logging.getLogger(__name__)

# Which log column counts spend for each kind of counted subject.
_COLUMN = {
    "user": "user_id",
    "api_key": "api_key_id",
    "team": "team_id",
    "provider": "provider_id",
    "model": "model",
}


# --- alerts --------------------------------------------------------------------------------


@off_loop
def _record(crossings: list[Crossing]) -> list[int]:
    created = []
    for crossing in crossings:
        check = crossing.check
        try:
            with transaction.atomic():
                alert = BudgetAlert.objects.create(
                    budget_id=check.budget_id,
                    subject_id=check.subject,
                    period_key=crossing.period_key,
                    threshold=crossing.threshold,
                    spent=Decimal(f"{crossing.spent:.6f}"),
                )
                AuditEvent.objects.create(
                    action="budget.threshold_crossed",
                    object_type="budget",
                    object_id=str(check.budget_id),
                    detail={
                        "budget": check.label,
                        "subject": check.subject,
                        "period": crossing.period_key,
                        "threshold_percent": crossing.threshold,
                        "spent": crossing.spent,
                        "limit": check.limit,
                        "unit": "usd" if check.usd else "tokens",
                    },
                )
        except IntegrityError:
            continue  # another gateway process recorded it first
        created.append(alert.pk)
    return created


async def record_crossings(crossings: list[Crossing]) -> None:
    from quotas.tasks import deliver_alert

    for alert_id in await _record(crossings):
        metrics.budget_alert()
        logger.info("budget.alert", extra={"alert_id": alert_id})
        await off_loop(deliver_alert.delay)(alert_id)


def deliver_alert(alert_id: int) -> bool:
    """POST the alert to its webhook; True when delivered (or there is nowhere to send it)."""
    alert = BudgetAlert.objects.select_related("budget").get(pk=alert_id)
    url = alert.budget.alert_webhook_url or setting("quotas.budget_alert_webhook_url")
    if not url or alert.delivered_at:
        return True
    body = orjson.dumps(
        {
            "event": "budget.threshold_crossed",
            "budget": {
                "id": alert.budget_id,
                "label": alert.budget.label,
                "limit": str(alert.budget.limit),
                "unit": alert.budget.unit,
            },
            "subject": alert.subject_id,
            "period": alert.period_key,
            "threshold_percent": alert.threshold,
            "spent": str(alert.spent),
            "at": alert.fired_at.isoformat(),
        }
    )
    headers = {"Content-Type": "application/json", "User-Agent": "ThinkWatch/0.1"}
    if settings.WEBHOOK_SECRET:
        digest = hmac.new(settings.WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
        headers["X-ThinkWatch-Signature"] = f"sha256={digest}"
    response = httpx.post(url, content=body, headers=headers, timeout=10)
    response.raise_for_status()
    BudgetAlert.objects.filter(pk=alert_id).update(delivered_at=timezone.now())
    return True


# --- spend from the log (restarts, lost Redis data) -------------------------------------------


def _spend_by_subject(
    kind: str, period: str, usd: bool, now: datetime, only: set[str]
) -> dict[str, float]:
    column = _COLUMN[kind]
    start = periods.start_of(period, now)
    measure = "cost_usd" if usd else "weighted_tokens"
    resets = dict(
        QuotaReset.objects.filter(subject_kind=kind, at__gte=start)
        .values_list("subject_id")
        .annotate(last=Max("at"))
    )
    spend = _spent(column, measure, start, now, only)
    for subject, since in resets.items():
        if subject in only:
            spend[subject] = _spent(column, measure, since, now, {subject}).get(subject, 0.0)
    return spend


def _spent(
    column: str, measure: str, since: datetime, now: datetime, subjects: set[str]
) -> dict[str, float]:
    """What the gateway log says each subject spent since `since`, from the log's store."""
    if settings.CLICKHOUSE_URL:
        from audit.clickhouse.usage import spent

        # Records are stamped when their request started: one still running is not late.
        until = now + timedelta(days=1)
        return {k: float(v) for k, v in spent(column, measure, since, until, subjects).items()}
    rows = (
        GatewayLog.objects.filter(created_at__gte=since, **{f"{column}__in": subjects})
        .values(column)
        .annotate(spent=Sum(measure))
    )
    return {str(row[column]): float(row["spent"] or 0) for row in rows}


def reconcile_budgets(
    table: QuotaTable, now: datetime | None = None
) -> list[tuple[BudgetCheck, str, float]]:
    """Each budget's spend this period according to the log, per counted subject."""
    from accounts.models import RoleAssignment

    now = now or datetime.now(UTC)
    found = []
    for (kind, ident), rows in table.all_budgets():
        for row in rows:
            if kind == "role":
                holders = {
                    str(u)
                    for u in RoleAssignment.objects.filter(role_id=ident).values_list(
                        "user_id", flat=True
                    )
                }
                spend = _spend_by_subject("user", row.period, row.usd, now, holders)
                counted = {f"user:{u}": s for u, s in spend.items()}
            else:
                spend = _spend_by_subject(kind, row.period, row.usd, now, {ident})
                counted = {f"{kind}:{ident}": s for s in spend.values()}
            found += [
                (_budget(subject, row), periods.key_of(row.period, now), s)
                for subject, s in counted.items()
            ]
    return found


async def reconcile(counters: MemoryCounters | RedisCounters, table: QuotaTable) -> int:
    """Raise every budget's counted spend to at least what the log says (never lower)."""
    found = await off_loop(reconcile_budgets)(table)
    for check, period_key, spent in found:
        await counters.raise_spend(check, period_key, spent)
    return len(found)


# --- resets and usage ------------------------------------------------------------------------


def reset_subject(kind: str, ident: str, by: Any, reason: str, ip: str | None = None) -> QuotaReset:
    reset = QuotaReset.objects.create(subject_kind=kind, subject_id=ident, by=by, reason=reason)
    AuditEvent.objects.create(
        action="quota.reset",
        actor_id=getattr(by, "pk", None),
        actor=getattr(by, "email", "") or "",
        object_type=kind,
        object_id=ident,
        detail={"reason": reason},
        client_ip=ip,
    )
    return reset


def snapshot_path() -> Any:
    return settings.DATA_DIR / "quota-counters.json"


def subject_checks(table: QuotaTable, kind: str, ident: str) -> tuple[list[Any], list[BudgetCheck]]:
    """The counters that belong to one subject: its own rules and budgets, and for a user
    the defaults of its roles (they count per user)."""
    counted = f"{kind}:{ident}"
    sources: list[tuple[str, str]] = [(kind, ident)]
    if kind == SubjectKind.USER:
        sources += [("role", str(role)) for role in table.roles_of(int(ident))]
    windows: list[Any] = []
    budgets: list[BudgetCheck] = []
    for source in sources:
        rules: list[Rule] = table.rules_of(*source)
        windows += [_window(r.surface, counted, r) for r in rules]
        rows: list[BudgetRow] = table.budgets_of(*source)
        budgets += [_budget(counted, b) for b in rows]
    return windows, budgets


async def usage(
    counters: MemoryCounters | RedisCounters, table: QuotaTable, kind: str, ident: str, now: float
) -> dict[str, Any]:
    windows, budgets = subject_checks(table, kind, ident)
    window_rows = []
    for check in windows:
        used = await counters.window_usage(check, now)
        window_rows.append(
            {
                "rule": check.label,
                "surface": check.key.split("|")[0],
                "limit": check.limit,
                "used": used,
                "remaining": max(0.0, check.limit - used),
            }
        )
    budget_rows = []
    for budget in budgets:
        spent, reserved = await counters.budget_usage(budget, now)
        budget_rows.append(
            {
                "budget": budget.label,
                "budget_id": budget.budget_id,
                "period": periods.key_of(budget.period, datetime.fromtimestamp(now, UTC)),
                "unit": "usd" if budget.usd else "tokens",
                "limit": budget.limit,
                "spent": spent,
                "reserved_in_flight": reserved,
                "remaining": max(0.0, budget.limit - spent - reserved),
            }
        )
    return {"subject": f"{kind}:{ident}", "windows": window_rows, "budgets": budget_rows}
