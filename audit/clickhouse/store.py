"""ClickHouse as the `audit.store.Store` (CLICKHOUSE_URL).

ClickHouse has no transactions, so the chain head stays in SQL: a batch is sealed under the
head's row lock, inserted into ClickHouse (one INSERT, one data part: all or nothing), and
the head is saved in the same SQL transaction. Several processes thus extend one chain.

If the INSERT succeeded but the SQL commit did not, ClickHouse holds records past the head.
Every append first looks for such records (cheap: each data part knows its min and max seq,
see migrations/0001) and moves the head to the last of them; a retry of that batch, marked
uncertain, then finds its uids already stored and skips them. So nothing is written twice
and the head always matches what ClickHouse holds.

The admin family is written to SQL first (AuditEvent.save seals it there) and copied here
(mirror.py): its append goes through SQL, and reads are preceded by a mirror.
"""

import logging
import time
from datetime import datetime
from functools import cache
from typing import Any

from django.conf import settings
from django.db import transaction

from audit import chain
from audit.clickhouse import client, mirror, schema
from audit.models import ChainHead
from audit.store import SqlStore

logger = logging.getLogger(__name__)

Record = dict[str, Any]

_MUTATION_TIMEOUT = 600.0


class ClickHouseStore:
    name = "clickhouse"

    def __init__(self) -> None:
        self._sql = SqlStore()

    # --- writing ----------------------------------------------------------------------

    def append(self, family: str, records: list[Record], *, uncertain: bool = False) -> int:
        if not records:
            return 0
        if family == "admin":
            written = self._sql.append(family, records, uncertain=uncertain)
            mirror.mirror_admin()
            return written
        with transaction.atomic():
            head = chain.locked_head(family)
            self._catch_up(family, head)
            if uncertain:
                records = self._unseen(family, records)
            if records:
                chain.seal(head, family, records)
                insert(family, [schema.to_row(family, r) for r in records])
            head.save(update_fields=["seq", "hash"])
        return len(records)

    @staticmethod
    def _catch_up(family: str, head: ChainHead) -> None:
        """Move the head past records ClickHouse holds beyond it (an INSERT whose SQL
        commit failed): they were sealed from this head, so they continue the chain."""
        found = client.execute(
            f"SELECT seq, chain_hash FROM {schema.table(family)} "  # noqa: S608
            "WHERE seq > %(seq)s ORDER BY seq DESC LIMIT 1",
            {"seq": head.seq},
        )
        if found:
            logger.warning(
                "audit.clickhouse.head_caught_up",
                extra={"family": family, "from_seq": head.seq, "to_seq": found[0][0]},
            )
            head.seq, head.hash = found[0]

    @staticmethod
    def _unseen(family: str, records: list[Record]) -> list[Record]:
        """The records whose uid is not stored yet. Only the batch's time span is searched:
        it is the table's sort key, so the lookup reads a few granules."""
        uids = tuple({r["uid"] for r in records if r.get("uid")})
        if not uids:
            return records
        times = [schema.micros(r["created_at"]) for r in records]
        held = {
            uid
            for (uid,) in client.execute(
                f"SELECT uid FROM {schema.table(family)} "  # noqa: S608
                "WHERE created_at_us >= %(lo)s AND created_at_us <= %(hi)s AND uid IN %(uids)s",
                {"lo": min(times), "hi": max(times), "uids": uids},
            )
        }
        return [r for r in records if not r.get("uid") or r["uid"] not in held]

    # --- reading ----------------------------------------------------------------------

    def read(
        self, family: str, *, after_seq: int = 0, until_seq: int | None = None, limit: int = 1000
    ) -> list[Record]:
        if family == "admin":
            mirror.mirror_admin()
        last = after_seq + limit if until_seq is None else min(until_seq, after_seq + limit)
        # Sequence numbers are dense, so the next `limit` records are normally exactly
        # those up to after_seq + limit: a range every part's seq index can rule out.
        rows = _select(family, after_seq, last, limit)
        if len(rows) < limit and last != until_seq:
            rows = _select(family, after_seq, until_seq, limit)  # a gap: read on past it
        return [schema.from_row(family, row) for row in rows]

    # --- retention --------------------------------------------------------------------

    def purge_before(self, family: str, cutoff: datetime) -> int:
        if family == "admin":
            self._sql.purge_before(family, cutoff)
        else:
            self._move_anchor(family, cutoff)
        anchor = ChainHead.objects.filter(family=family).values_list("anchor_seq", flat=True)
        return delete_through(family, anchor.first() or 0)

    @staticmethod
    def _move_anchor(family: str, cutoff: datetime) -> None:
        """As SqlStore does: what goes is the chain up to the first record that is still
        young, and its last link becomes the anchor the kept records verify from."""
        table = schema.table(family)
        first_kept, young = client.execute(
            f"SELECT min(seq), count() FROM {table} WHERE created_at_us >= %(cutoff)s",  # noqa: S608
            {"cutoff": schema.micros(cutoff)},
        )[0]
        with transaction.atomic():
            head = chain.locked_head(family)
            last = first_kept - 1 if young else head.seq
            if last <= head.anchor_seq:
                return
            found = client.execute(
                f"SELECT chain_hash FROM {table} WHERE seq = %(seq)s LIMIT 1",  # noqa: S608
                {"seq": last},
            )
            if not found:
                return  # the anchor record is missing: audit_verify reports it
            head.anchor_seq, head.anchor_hash = last, found[0][0]
            head.save(update_fields=["anchor_seq", "anchor_hash"])

    def ping(self) -> None:
        client.execute("SELECT 1")


def insert(family: str, rows: list[list[Any]]) -> None:
    columns = ", ".join(schema.insert_columns(family))
    sql = f"INSERT INTO {schema.table(family)} ({columns}) VALUES"
    for chunk in schema.chunks(rows, family):
        client.execute(sql, chunk)


def _select(family: str, after: int, until: int | None, limit: int) -> list[tuple[Any, ...]]:
    columns = ", ".join(schema.select_columns(family))
    bound = "" if until is None else " AND seq <= %(until)s"
    return list(
        client.execute(
            f"SELECT {columns} FROM {schema.table(family)} "  # noqa: S608
            f"WHERE seq > %(after)s{bound} ORDER BY seq LIMIT %(limit)s",
            {"after": after, "until": until, "limit": limit},
        )
    )


def delete_through(family: str, anchor_seq: int) -> int:
    """Delete the records up to the anchor with one ALTER TABLE ... DELETE mutation, and
    wait for it. A mutation rewrites only the data parts that hold such records (18.16
    included); whole partitions are not dropped, because a record sealed late but created
    in an old week lands in an old partition, and a drop would take it with it."""
    table = schema.table(family)
    gone = client.execute(
        f"SELECT count() FROM {table} WHERE seq <= %(seq)s",  # noqa: S608
        {"seq": anchor_seq},
    )[0][0]
    if gone:
        client.execute(f"ALTER TABLE {table} DELETE WHERE seq <= %(seq)s", {"seq": anchor_seq})
        wait_for_mutations(family)
    return int(gone)


def wait_for_mutations(family: str) -> None:
    deadline = time.monotonic() + _MUTATION_TIMEOUT
    pause = 0.02
    while client.execute(
        "SELECT count() FROM system.mutations "
        "WHERE database = %(database)s AND table = %(table)s AND is_done = 0",
        {"database": client.current().database, "table": schema.TABLES[family]},
    )[0][0]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the ClickHouse purge of {family} records is still running")
        time.sleep(pause)
        pause = min(pause * 2, 1.0)


@cache
def _store_for(url: str) -> ClickHouseStore:
    return ClickHouseStore()


def store() -> ClickHouseStore:
    """The store for the configured CLICKHOUSE_URL (one instance per URL and process)."""
    return _store_for(settings.CLICKHOUSE_URL)
