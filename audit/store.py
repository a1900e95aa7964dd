"""Where log records end up: the SQL database by default, ClickHouse with CLICKHOUSE_URL.

A store appends a batch of one family atomically, sealing it into the family's chain under
the chain head's lock (audit/chain.py), and reads records back in chain order for
verification, forwarding and retention. `uncertain=True` says the batch may already have
been written (a delivery repeated after a crash): records whose uid the store already holds
are skipped, so a record is written once.
"""

from collections.abc import Iterator
from datetime import datetime
from functools import cache
from typing import Any, Protocol

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, models, transaction

from audit import chain
from audit.models import ChainHead
from audit.writer import TableWriter

Record = dict[str, Any]

_PURGE_CHUNK = 5_000


class Store(Protocol):
    name: str

    def append(self, family: str, records: list[Record], *, uncertain: bool = False) -> int:
        """Seal and write `records` (one family) as one batch; returns how many were new."""

    def read(
        self, family: str, *, after_seq: int = 0, until_seq: int | None = None, limit: int = 1000
    ) -> list[Record]:
        """Records with after_seq < seq <= until_seq, in seq order, as dicts of the family's
        columns (values of the types `audit.chain.canonical` accepts)."""

    def purge_before(self, family: str, cutoff: datetime) -> int:
        """Delete the oldest records, created before `cutoff`, keeping the chain verifiable:
        the last deleted record becomes the head's anchor. Returns how many went."""

    def ping(self) -> None:
        """Raise if the store cannot be reached."""


class SqlStore:
    """The Django database: one INSERT per batch, in the transaction that holds the head."""

    name = "sql"

    def __init__(self) -> None:
        self._writers = {family: TableWriter(model) for family, model in chain.FAMILIES.items()}

    def append(self, family: str, records: list[Record], *, uncertain: bool = False) -> int:
        model = chain.FAMILIES[family]
        with transaction.atomic():
            head = chain.locked_head(family)
            if uncertain:
                held = set(
                    model._default_manager.filter(uid__in=[r["uid"] for r in records]).values_list(
                        "uid", flat=True
                    )
                )
                records = [r for r in records if r["uid"] not in held]
                if not records:
                    return 0
            chain.seal(head, family, records)
            self._writers[family].insert(records)
            head.save(update_fields=["seq", "hash"])
        return len(records)

    def read(
        self, family: str, *, after_seq: int = 0, until_seq: int | None = None, limit: int = 1000
    ) -> list[Record]:
        model = chain.FAMILIES[family]
        rows = model._default_manager.filter(seq__gt=after_seq)
        if until_seq is not None:
            rows = rows.filter(seq__lte=until_seq)
        names = [c.name for c in chain.columns(family)]
        return list(rows.order_by("seq").values("id", "seq", "chain_hash", *names)[:limit])

    def purge_before(self, family: str, cutoff: datetime) -> int:
        model = chain.FAMILIES[family]
        gone = 0
        # Rows from before the chain existed carry no seq: they go by date alone.
        while True:
            ids = list(
                model._default_manager.filter(seq__isnull=True, created_at__lt=cutoff).values_list(
                    "id", flat=True
                )[:_PURGE_CHUNK]
            )
            if not ids:
                break
            gone += model._default_manager.filter(id__in=ids).delete()[0]
        # Chained rows go in seq order up to the first one that is still young, so what is
        # kept is one unbroken stretch of the chain.
        first_kept = (
            model._default_manager.filter(seq__isnull=False, created_at__gte=cutoff)
            .order_by("seq")
            .values_list("seq", flat=True)
            .first()
        )
        with transaction.atomic():
            head = chain.locked_head(family)
            last = head.seq if first_kept is None else first_kept - 1
            if last <= head.anchor_seq:
                return gone
            anchor = (
                model._default_manager.filter(seq=last).values_list("chain_hash", flat=True).first()
            )
            if anchor is None:
                return gone  # its anchor row is missing: audit_verify reports that
            while True:
                ids = list(
                    model._default_manager.filter(seq__lte=last)
                    .order_by("seq")
                    .values_list("id", flat=True)[:_PURGE_CHUNK]
                )
                if not ids:
                    break
                gone += model._default_manager.filter(id__in=ids).delete()[0]
            head.anchor_seq, head.anchor_hash = last, anchor
            head.save(update_fields=["anchor_seq", "anchor_hash"])
        return gone

    def ping(self) -> None:
        with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
            cursor.execute("SELECT 1")


@cache
def _sql() -> SqlStore:
    return SqlStore()


def current() -> Store:
    """The store log records go to, by configuration."""
    if getattr(settings, "CLICKHOUSE_URL", ""):
        from audit.clickhouse.store import store

        return store()
    return _sql()


def iterate(
    store: Store, family: str, *, after_seq: int, until_seq: int | None = None, page: int = 2_000
) -> Iterator[Record]:
    """Every record after `after_seq` (up to `until_seq`), page by page."""
    while True:
        rows = store.read(family, after_seq=after_seq, until_seq=until_seq, limit=page)
        yield from rows
        if len(rows) < page:
            return
        after_seq = rows[-1]["seq"]


def head(family: str) -> ChainHead:
    return ChainHead.objects.filter(family=family).first() or ChainHead(family=family)


def model_of(family: str) -> type[models.Model]:
    return chain.FAMILIES[family]
