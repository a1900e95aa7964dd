"""The JSON form of a log record as every forwarder sends it: its family, its place in the
chain (seq, chain_hash) and every column of the family, with datetimes in ISO 8601 UTC,
decimals as strings (no float rounding of costs) and IP addresses as text.

The same object whichever store the record was read from (SQL or ClickHouse), so a SIEM
sees one format."""

import ipaddress
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from audit import chain

Record = dict[str, Any]


def timestamp(value: datetime | str) -> str:
    """ISO 8601 in UTC with microseconds, `Z` for the zone (also valid RFC 5424)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _value(column: chain.Column, value: Any) -> Any:
    if value is None:
        return None
    if column.kind == "datetime":
        return timestamp(value)
    if column.kind == "decimal":
        return str(Decimal(str(value)).quantize(Decimal(1).scaleb(-column.places)))
    if column.kind == "float":
        return float(value)
    if column.kind == "ip":
        return ipaddress.ip_address(value).compressed if value != "" else None
    if column.kind == "json" and isinstance(value, str):
        return orjson.loads(value)  # stores without a JSON type hand back the text
    return value


def as_json(family: str, row: Record) -> Record:
    """`row` as read from the store (audit.store.Store.read) in the forwarded form."""
    out: Record = {"family": family, "seq": row["seq"], "chain_hash": row["chain_hash"]}
    for column in chain.columns(family):
        if column.name not in NOT_FORWARDED:
            out[column.name] = _value(column, row.get(column.name))
    return out


# Captured bodies stay in the store, where reading them takes audit:read_bodies (a SIEM
# gets the fact of the capture: body_redactions, body_ref, body_sha256).
NOT_FORWARDED = frozenset({"request_body", "response_body", "result"})


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)
