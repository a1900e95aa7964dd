"""Tamper evidence: every log record carries an HMAC chained to the previous record of its
family.

A record's link is HMAC-SHA256(key, previous link || canonical form of the record). The key
is derived from the master key, so someone who can edit rows in the store but does not hold
the master key cannot recompute the links after an edit; after a master-key rotation the
previous keys still verify older records. `ChainHead` holds each family's last sequence
number and link (the lock that serialises writers) and the anchor left by retention: the
last record purged, which the first kept record links to.
"""

import hashlib
import hmac
import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from functools import cache
from typing import Any

import orjson
from django.conf import settings
from django.db import IntegrityError, models, transaction

from audit.models import AccessLog, AuditEvent, ChainHead, GatewayLog, McpLog, new_uid

Record = dict[str, Any]

FAMILIES: dict[str, type[models.Model]] = {
    "gateway": GatewayLog,
    "mcp": McpLog,
    "admin": AuditEvent,
    "access": AccessLog,
}
# Columns that are the chain itself or the store's own row id, not record content.
_NOT_HASHED = {"id", "seq", "chain_hash"}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # datetime, decimal, float, ip, json, plain
    places: int = 0


def _kind(field: models.Field) -> Column:
    name = field.attname
    if isinstance(field, models.DateTimeField):
        return Column(name, "datetime")
    if isinstance(field, models.DecimalField):
        return Column(name, "decimal", field.decimal_places or 0)
    if isinstance(field, models.FloatField):
        return Column(name, "float")
    if isinstance(field, models.GenericIPAddressField):
        return Column(name, "ip")
    if isinstance(field, models.JSONField):
        return Column(name, "json")
    return Column(name, "plain")


@cache
def columns(family: str) -> tuple[Column, ...]:
    """The hashed content of a record of `family`, in a fixed order."""
    model = FAMILIES[family]
    return tuple(_kind(f) for f in model._meta.concrete_fields if f.attname not in _NOT_HASHED)


def _canonical_value(column: Column, value: Any) -> Any:
    if value is None:
        return None
    if column.kind == "datetime":
        if isinstance(value, str):
            value = datetime.fromisoformat(value)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if column.kind == "decimal":
        return str(Decimal(str(value)).quantize(Decimal(1).scaleb(-column.places)))
    if column.kind == "float":
        return repr(float(value))
    if column.kind == "ip":
        return ipaddress.ip_address(value).compressed if value != "" else ""
    return value


def canonical(family: str, record: Record) -> bytes:
    """The bytes a link covers: every content column, normalised so that the value read
    back from any store (SQLite, PostgreSQL, ClickHouse) gives the same bytes as the value
    written."""
    body = [
        [column.name, _canonical_value(column, record.get(column.name))]
        for column in columns(family)
    ]
    return orjson.dumps([family, body], option=orjson.OPT_SORT_KEYS)


@cache
def _keys(current: bytes, previous: tuple[bytes, ...]) -> tuple[bytes, ...]:
    return tuple(
        hashlib.sha256(b"thinkwatch audit chain v1\x00" + key).digest()
        for key in (current, *previous)
    )


def keys() -> tuple[bytes, ...]:
    """The current chain key first, then those of previous master keys."""
    return _keys(settings.MASTER_KEY, tuple(settings.PREVIOUS_MASTER_KEYS))


def link(previous: str, family: str, record: Record, key: bytes | None = None) -> str:
    message = previous.encode() + b"\n" + canonical(family, record)
    return hmac.new(key or keys()[0], message, hashlib.sha256).hexdigest()


def seal(head: ChainHead, family: str, records: Iterable[Record]) -> None:
    """Give each record the next sequence number and its link, advancing `head` (not
    saved: the caller saves it in the transaction that writes the records)."""
    key = keys()[0]
    for record in records:
        if not record.get("uid"):
            record["uid"] = new_uid()
        head.seq += 1
        record["seq"] = head.seq
        record["chain_hash"] = head.hash = link(head.hash, family, record, key)


def locked_head(family: str) -> ChainHead:
    """The family's head, locked for the rest of the caller's transaction."""
    assert transaction.get_connection().in_atomic_block, "lock the head inside a transaction"
    try:
        return ChainHead.objects.select_for_update().get(family=family)
    except ChainHead.DoesNotExist:
        pass
    try:
        with transaction.atomic():
            ChainHead.objects.create(family=family)
    except IntegrityError:
        pass  # created meanwhile by another writer
    return ChainHead.objects.select_for_update().get(family=family)


# --- verification ---------------------------------------------------------------------


@dataclass
class Verdict:
    family: str
    checked: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    broken_seq: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.broken_seq is None and not self.reason


def verify(
    family: str,
    rows: Iterator[Record],
    *,
    previous: tuple[int, str],
    head: tuple[int, str] | None = None,
) -> Verdict:
    """Walk `rows` (ordered by seq) from the link `previous` = (seq, hash) and report the
    first record whose sequence number or link does not follow. With `head` (the family's
    recorded last seq and link), also check that nothing was removed from the end."""
    verdict = Verdict(family)
    expected_seq, expected_hash = previous
    candidates = keys()
    for row in rows:
        seq = row["seq"]
        if verdict.first_seq is None:
            verdict.first_seq = seq
        if seq != expected_seq + 1:
            verdict.broken_seq = expected_seq + 1
            verdict.reason = f"record {expected_seq + 1} is missing (next found: {seq})"
            return verdict
        stored = row.get("chain_hash") or ""
        if not any(
            hmac.compare_digest(link(expected_hash, family, row, key), stored) for key in candidates
        ):
            verdict.broken_seq = seq
            verdict.reason = (
                f"record {seq} does not match its link: altered, or its predecessor was"
            )
            return verdict
        verdict.checked += 1
        verdict.last_seq = seq
        expected_seq, expected_hash = seq, stored
    if head is not None and expected_seq < head[0]:
        verdict.broken_seq = expected_seq + 1
        verdict.reason = (
            f"records {expected_seq + 1}..{head[0]} are missing (the chain head says {head[0]})"
        )
    elif head is not None and expected_seq == head[0] and expected_hash != head[1]:
        verdict.broken_seq = expected_seq
        verdict.reason = f"record {expected_seq} is not the one the chain head recorded"
    return verdict
