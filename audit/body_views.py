"""The console page showing one record's captured bodies (what GET
/api/logs/{family}/{id}/body answers), for holders of audit:read_bodies who may see the
record. The URL wraps it in the console site's `admin_view` (sign-in, no cache)."""

import json
from typing import Any

from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET

from accounts.access import Denied, Rights
from audit import bodies, explorer

_LABELS = {
    "request_body": "Request",
    "response_body": "Response",
    "arguments": "Arguments",
    "result": "Result",
}


@require_GET
def record_body(request: HttpRequest, kind: str, pk: int) -> HttpResponse:
    if kind not in bodies.BODY_FIELDS:
        raise Http404("Bodies are captured for the gateway and MCP logs only.")
    context: dict[str, Any] = {
        **admin.site.each_context(request),
        "title": f"Bodies of {kind} record {pk}",
        "back_url": reverse("console-log-record", args=[kind, pk]),
        "logs_url": f"{reverse('console-logs')}?tab={kind}",
    }
    if not Rights.of(request.user).has("audit:read_bodies"):
        context["error"] = "Reading captured bodies needs the audit:read_bodies permission."
        return render(request, "console/logs_body.html", context, status=403)
    try:
        record = explorer.record(kind, request.user, pk)
    except Denied as exc:
        context["error"] = str(exc)
        return render(request, "console/logs_body.html", context, status=403)
    if record is None:
        raise Http404("No such record, or not one you may see.")
    try:
        found = bodies.read(kind, record)
    except bodies.Unreadable as exc:
        context |= {"error": str(exc), "state": exc.state}
        return render(request, "console/logs_body.html", context, status=409)
    context |= {
        "found": found,
        "parts": [(_LABELS[name], _shown(value)) for name, value in found.values.items()],
        "redactions": sorted(found.redactions.items()),
    }
    return render(request, "console/logs_body.html", context)


def _shown(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, indent=2, ensure_ascii=False)
