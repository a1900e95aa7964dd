"""The admin audit trail's copy in ClickHouse.

Admin events are written to SQL as they happen: AuditEvent.save seals each into the admin
chain inside the change's own transaction, so an event exists exactly when its change does.
ClickHouse gets them afterwards, with their seq and link unchanged, so the copy verifies as
the original does. The Celery drain task calls `mirror_admin` often, and the store calls it
before it reads the admin family.
"""

from django.db import transaction

from audit import chain
from audit.clickhouse import client, schema
from audit.models import AuditEvent

BATCH = 1_000


def mirror_admin(batch: int = BATCH) -> int:
    """Copy the admin events above the highest seq ClickHouse holds (and above the
    retention anchor), oldest first, `batch` per INSERT; returns how many were copied.

    Each batch runs under the admin chain head's lock: two mirrors at once would copy the
    same events twice. Events from before the chain existed (no seq) are not copied."""
    from audit.clickhouse.store import insert

    names = ["seq", "chain_hash", *(f.name for f in schema.fields("admin"))]
    copied = 0
    while True:
        with transaction.atomic():
            head = chain.locked_head("admin")
            after = max(_highest(), head.anchor_seq)
            events = list(
                AuditEvent.objects.filter(seq__gt=after).order_by("seq").values(*names)[:batch]
            )
            if events:
                insert("admin", [schema.to_row("admin", e) for e in events])
        copied += len(events)
        if len(events) < batch:
            return copied


def _highest() -> int:
    found = client.execute(f"SELECT max(seq) FROM {schema.table('admin')}")  # noqa: S608
    return int(found[0][0])
