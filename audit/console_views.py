"""Console pages over the gateway's records: the live dashboard and usage and cost.

Both show only the records the signed-in user may see (`accounts.access.log_filter`).
The URLs wrap these views in the console site's `admin_view` (console rights, sign-in
redirect, no caching, CSRF).
"""

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts.access import log_filter
from audit import live, tickets, usage

ROWS_SHOWN = 500


def _page(request: HttpRequest, template: str, status: int = 200, **context: Any) -> HttpResponse:
    context = {**admin.site.each_context(request), **context}
    return render(request, f"console/{template}", context, status=status)


@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return _page(
        request,
        "dashboard.html",
        title="Live traffic",
        ticket=tickets.mint(request.user),
        ticket_url=reverse("console-dashboard-ticket"),
        window_minutes=int(live.WINDOW.total_seconds() // 60),
        series_minutes=live.SERIES_MINUTES,
    )


@require_POST
def dashboard_ticket(request: HttpRequest) -> JsonResponse:
    """A fresh ticket for the page's next socket (each one works once)."""
    return JsonResponse({"ticket": tickets.mint(request.user)})


def _csv(result: usage.Report) -> HttpResponse:
    period = result.period
    name = f"thinkwatch-usage-{result.group_by}-{period.start}-{period.end}.csv"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    usage.write_csv(result, response)
    return response


@require_GET
def usage_page(request: HttpRequest) -> HttpResponse:
    group_by = request.GET.get("group_by", "model")
    start, end = request.GET.get("start", ""), request.GET.get("end", "")
    form: dict[str, Any] = {
        "group_by": group_by,
        "start": start,
        "end": end,
        "groups": usage.GROUPS,
    }
    scope = log_filter(request.user)
    try:
        result = usage.report(scope, group_by, usage.Period.parse(start, end))
    except ValueError as exc:
        return _page(
            request, "usage.html", status=400, title="Usage and cost", error=str(exc), **form
        )
    if request.GET.get("format") == "csv":
        return _csv(result)
    form |= {"start": result.period.start.isoformat(), "end": result.period.end.isoformat()}
    query = request.GET.copy()
    query["format"] = "csv"
    return _page(
        request,
        "usage.html",
        title="Usage and cost",
        report=result,
        rows=result.rows[:ROWS_SHOWN],
        rows_hidden=max(0, len(result.rows) - ROWS_SHOWN),
        budgets=usage.budget_statuses(scope),
        csv_query=query.urlencode(),
        **form,
    )
