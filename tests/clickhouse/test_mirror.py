"""The admin audit trail, written to SQL first, copied to ClickHouse: once, in order, with
each event's seq and link unchanged."""

from audit.clickhouse import client, schema
from audit.clickhouse.mirror import mirror_admin
from audit.models import AuditEvent
from tests.clickhouse.conftest import rows_in


def held() -> list[tuple[int, str]]:
    return client.execute(
        f"SELECT seq, chain_hash FROM {schema.table('admin')} ORDER BY seq"  # noqa: S608
    )


def sealed() -> list[tuple[int, str]]:
    return list(AuditEvent.objects.order_by("seq").values_list("seq", "chain_hash"))


def test_it_copies_each_event_once(ch: str) -> None:
    for n in range(3):
        AuditEvent.objects.create(action=f"test.{n}")

    first, second = mirror_admin(), mirror_admin()

    assert (first, second) == (len(sealed()), 0)
    assert held() == sealed()


def test_it_copies_a_backlog_in_batches(ch: str) -> None:
    for n in range(7):
        AuditEvent.objects.create(action=f"test.{n}")

    copied = mirror_admin(batch=2)

    assert copied == len(sealed())
    assert held() == sealed()


def test_it_copies_only_what_came_after_the_last_copy(ch: str) -> None:
    AuditEvent.objects.create(action="test.before")
    mirror_admin()
    AuditEvent.objects.create(action="test.after")

    copied = mirror_admin()

    assert copied == 1
    assert rows_in("admin") == len(sealed())
    assert held() == sealed()
