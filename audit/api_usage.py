"""`/api/usage`: the usage and cost report of the console's Usage page, as JSON."""

from datetime import date
from decimal import Decimal
from typing import Literal

from django.http import HttpRequest
from ninja import Query, Router, Schema
from ninja.errors import HttpError

from accounts.access import log_filter
from audit import usage

router = Router(tags=["usage"])


class UsageQuery(Schema):
    group_by: Literal["user", "team", "key", "model", "provider", "day"] = "model"
    start: date | None = None
    end: date | None = None


class UsageRowOut(Schema):
    key: str | None
    label: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal


class UsageOut(Schema):
    group_by: str
    start: date
    end: date
    rows: list[UsageRowOut]
    totals: UsageRowOut


@router.get("", response=UsageOut)
def usage_report(request: HttpRequest, query: Query[UsageQuery]) -> dict[str, object]:
    """Requests, errors, tokens and cost per group over whole UTC days (start and end
    included; by default this month so far), counting only the records the caller may
    see: all with `logs:read_all`, their teams' with `logs:read_team`, their own with
    `logs:read_own`. `key` is the group's value: a user, team or key id, a model or
    provider name, or a day."""
    try:
        period = usage.Period.between(query.start, query.end)
    except ValueError as exc:
        raise HttpError(422, str(exc)) from None
    result = usage.report(log_filter(request.user), query.group_by, period)
    return {
        "group_by": result.group_by,
        "start": period.start,
        "end": period.end,
        "rows": result.rows,
        "totals": result.totals,
    }
