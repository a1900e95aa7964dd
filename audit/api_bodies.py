"""Captured bodies through the management API: GET /api/logs/{family}/{id}/body.

Needs audit:read_bodies, and the record must be one the caller may see in the log explorer
(audit/explorer.py decides). Offloaded bodies are fetched from S3-compatible storage and
checked against the SHA-256 their record holds: an object that was altered or deleted is
answered with 409 and says so, never served.
"""

from typing import Any

from django.http import HttpRequest
from ninja import Field, Router, Schema
from ninja.errors import HttpError

from accounts.access import Rights
from audit import bodies, explorer

router = Router(tags=["logs"])

_UNREADABLE_STATUS = {"tampered": 409, "missing": 409, "unavailable": 503}


class BodyOut(Schema):
    family: str
    id: int
    captured: bool = Field(description="False when body capture was off for this record.")
    stored: str = Field(description='"inline", "offloaded" (S3-compatible storage) or "".')
    truncated: bool = Field(description="A body was longer than the cap and was cut.")
    redactions: dict[str, int] = Field(
        description="What redaction replaced, by kind: email, phone, card, ip, secret."
    )
    sha256: str = Field(description="Of the offloaded object, as its record holds it.")
    request_body: str | None = Field(None, description="Gateway: the request as received.")
    response_body: str | None = Field(None, description="Gateway: the response as sent.")
    arguments: Any = Field(None, description="MCP: the call's arguments.")
    result: str | None = Field(None, description="MCP: the call's result, as JSON text.")


@router.get("/{family}/{int:record_id}/body", response=BodyOut)
def record_body(request: HttpRequest, family: str, record_id: int) -> dict[str, Any]:
    """The captured bodies of one gateway or MCP record. Needs `audit:read_bodies`."""
    if family not in bodies.BODY_FIELDS:
        raise HttpError(404, "Bodies are captured for the gateway and mcp logs only.")
    if not Rights.of(request.user).has("audit:read_bodies"):
        raise HttpError(403, "Reading captured bodies needs the audit:read_bodies permission.")
    record = explorer.record(family, request.user, record_id)
    if record is None:
        raise HttpError(404, "No such record, or not one you may see.")
    try:
        found = bodies.read(family, record)
    except bodies.Unreadable as exc:
        raise HttpError(_UNREADABLE_STATUS[exc.state], str(exc)) from None
    return {
        "family": family,
        "id": record_id,
        "captured": found.captured,
        "stored": found.stored,
        "truncated": found.truncated,
        "redactions": found.redactions,
        "sha256": found.sha256,
        **found.values,
    }
