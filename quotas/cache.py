"""Rate-limit rules and budgets as the gateway sees them: one snapshot in memory, turned
into the checks of each request without a database query.

Where a request's limits come from:
- identity: the defaults of the user's roles (the strictest role wins, slot by slot),
  replaced by the user's own rules, then by the key's. Role and user rules count per user;
  a key's own rule counts per key. A service key (no owner) has only its own rules.
- every enabled rule of the other subjects the request touches: its team, provider and
  model (on the MCP gateway: the MCP server), each counted per that subject.
A slot is (metric, window) for rules and (period, unit) for budgets.
"""

import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from django.db.models import Q
from django.utils import timezone

from accounts.models import RoleAssignment
from quotas.counters import BudgetCheck, WindowCheck
from quotas.models import Budget, Period, RateLimitRule, Window
from thinkwatch.lib.db import off_loop
from thinkwatch.lib.snapshot import Snapshot

Subject = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str
    surface: str
    requests: bool
    window: int
    limit: int


@dataclass(frozen=True, slots=True)
class BudgetRow:
    id: int
    kind: str
    period: str
    usd: bool
    limit: float


Checks = tuple[tuple[WindowCheck, ...], tuple[BudgetCheck, ...]]
NONE: Checks = ((), ())


class QuotaTable:
    def __init__(
        self,
        rules: dict[Subject, list[Rule]],
        budgets: dict[Subject, list[BudgetRow]],
        roles_of: dict[int, list[tuple[int, int | None]]],
        valid_until: float,
    ) -> None:
        self._rules, self._budgets, self._roles_of = rules, budgets, roles_of
        self.valid_until = valid_until
        self.empty = not rules and not budgets
        self._memo: OrderedDict[tuple[Any, ...], Checks] = OrderedDict()

    def checks(
        self,
        surface: str,
        key_id: int,
        owner_id: int | None,
        team_id: int | None,
        others: tuple[Subject, ...],
    ) -> Checks:
        if self.empty:
            return NONE
        memo_key = (surface, key_id, owner_id, team_id, others)
        found = self._memo.get(memo_key)
        if found is None:
            found = self._resolve(surface, key_id, owner_id, team_id, others)
            self._memo[memo_key] = found
            if len(self._memo) > 20_000:
                self._memo.popitem(last=False)
        return found

    def _layers(
        self, owner_id: int | None, team_id: int | None, key_id: int
    ) -> list[list[tuple[Subject, str]]]:
        """Identity sources, from defaults to overrides: [roles], [user], [key]. Each
        source comes with the subject its counters belong to."""
        if owner_id is None:
            return [[(("api_key", str(key_id)), f"api_key:{key_id}")]]
        user = f"user:{owner_id}"
        roles = [
            role
            for role, team in self._roles_of.get(owner_id, ())
            if team is None or team == team_id
        ]
        return [
            [(("role", str(role)), user) for role in roles],
            [(("user", str(owner_id)), user)],
            [(("api_key", str(key_id)), f"api_key:{key_id}")],
        ]

    def _resolve(
        self,
        surface: str,
        key_id: int,
        owner_id: int | None,
        team_id: int | None,
        others: tuple[Subject, ...],
    ) -> Checks:
        window_slots: dict[tuple[bool, int], tuple[Rule, str]] = {}
        budget_slots: dict[tuple[str, bool], tuple[BudgetRow, str]] = {}
        for layer in self._layers(owner_id, team_id, key_id):
            # Within a layer the strictest wins; a later layer replaces what it defines.
            layer_windows: dict[tuple[bool, int], tuple[Rule, str]] = {}
            layer_budgets: dict[tuple[str, bool], tuple[BudgetRow, str]] = {}
            for source, counted in layer:
                for rule in self._rules.get(source, ()):
                    slot = (rule.requests, rule.window)
                    if rule.surface == surface and (
                        slot not in layer_windows or rule.limit < layer_windows[slot][0].limit
                    ):
                        layer_windows[slot] = (rule, counted)
                for row in self._budgets.get(source, ()):
                    bslot = (row.period, row.usd)
                    if bslot not in layer_budgets or row.limit < layer_budgets[bslot][0].limit:
                        layer_budgets[bslot] = (row, counted)
            window_slots.update(layer_windows)
            budget_slots.update(layer_budgets)
        windows = [_window(surface, counted, rule) for rule, counted in window_slots.values()]
        budgets = [_budget(counted, row) for row, counted in budget_slots.values()]
        for kind, ident in others:
            if ident is None:
                continue
            counted = f"{kind}:{ident}"
            windows += [
                _window(surface, counted, r)
                for r in self._rules.get((kind, str(ident)), ())
                if r.surface == surface
            ]
            budgets += [_budget(counted, b) for b in self._budgets.get((kind, str(ident)), ())]
        return tuple(windows), tuple(budgets)

    def all_budgets(self) -> list[tuple[Subject, list[BudgetRow]]]:
        return list(self._budgets.items())

    def roles_of(self, user_id: int) -> list[int]:
        return [role for role, _ in self._roles_of.get(user_id, ())]

    def budgets_of(self, kind: str, ident: str) -> list[BudgetRow]:
        return list(self._budgets.get((kind, ident), ()))

    def rules_of(self, kind: str, ident: str) -> list[Rule]:
        return list(self._rules.get((kind, ident), ()))


def _label_kind(counted: str) -> str:
    return counted.split(":", 1)[0]


def _window(surface: str, counted: str, rule: Rule) -> WindowCheck:
    metric = "requests" if rule.requests else "tokens"
    return WindowCheck(
        key=f"{surface}|{counted}|{metric}|{rule.window}",
        label=f"{_label_kind(counted)}:{metric}/{Window(rule.window).label}",
        requests=rule.requests,
        window=rule.window,
        limit=rule.limit,
    )


def _budget(counted: str, row: BudgetRow) -> BudgetCheck:
    period = Period(row.period).label.split(" ")[0]
    return BudgetCheck(
        row.id, counted, f"{_label_kind(counted)}:budget/{period}", row.period, row.usd, row.limit
    )


def load_quota_table() -> QuotaTable:
    now = timezone.now()
    live = Q(enabled=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    rules: dict[Subject, list[Rule]] = {}
    expiries: list[float] = []
    for r in RateLimitRule.objects.filter(live):
        rules.setdefault((r.subject_kind, r.subject_id), []).append(
            Rule(r.subject_kind, r.surface, r.metric == "requests", r.window, r.limit)
        )
        if r.expires_at:
            expiries.append(r.expires_at.timestamp())
    budgets: dict[Subject, list[BudgetRow]] = {}
    for b in Budget.objects.filter(live):
        budgets.setdefault((b.subject_kind, b.subject_id), []).append(
            BudgetRow(b.pk, b.subject_kind, b.period, b.unit == "usd", float(b.limit))
        )
        if b.expires_at:
            expiries.append(b.expires_at.timestamp())
    roles_of: dict[int, list[tuple[int, int | None]]] = {}
    if any(kind == "role" for kind, _ in (*rules, *budgets)):
        for user_id, role_id, team_id in RoleAssignment.objects.values_list(
            "user_id", "role_id", "team_id"
        ):
            roles_of.setdefault(user_id, []).append((role_id, team_id))
    return QuotaTable(rules, budgets, roles_of, min(expiries, default=math.inf))


# Reloaded on a config change, and when a limit in the table expires.
quotas: Snapshot[QuotaTable] = Snapshot(
    off_loop(load_quota_table), fresh=lambda table: time.time() < table.valid_until
)
