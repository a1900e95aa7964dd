"""Whose limits a user may see and change: `limits:*` rights held globally cover every
subject; held within a team, they cover that team and the team's keys. Shared by the
management API and the console so both make the same check."""

from typing import Any

from django.db.models import Q

from accounts.access import Everywhere, Rights
from accounts.models import ApiKey


def subject_team(kind: str, subject_id: str) -> int | None:
    """The team whose team-scoped `limits:*` rights cover this subject (None: global)."""
    if kind == "team":
        return int(subject_id) if subject_id.isdigit() else None
    if kind == "api_key" and subject_id.isdigit():
        return ApiKey.objects.filter(pk=subject_id).values_list("team_id", flat=True).first()
    return None


def may(user: Any, perm: str, kind: str, subject_id: str) -> bool:
    return Rights.of(user).has(perm, subject_team(kind, subject_id))


def visible(user: Any, perm: str = "limits:read") -> Q:
    """A filter for RateLimitRule/Budget rows whose subject `user` holds `perm` for."""
    rights = Rights.of(user)
    teams = rights.teams_with(perm)
    if isinstance(teams, Everywhere):
        excluded = rights.excluded_teams(perm)
        if not excluded:
            return Q(pk__isnull=False)
        return ~_of_teams(excluded)
    return _of_teams(teams) if teams else Q(pk__in=[])


def _of_teams(teams: set[int]) -> Q:
    keys = ApiKey.objects.filter(team__in=teams).values_list("pk", flat=True)
    return Q(subject_kind="team", subject_id__in=[str(t) for t in teams]) | Q(
        subject_kind="api_key", subject_id__in=[str(k) for k in keys]
    )
