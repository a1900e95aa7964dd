"""The forwarding jobs: send what is new in the store to each forwarder, and retry the
outbox. Neither touches the request path: both read the store (audit.store.current())
behind the records' sequence numbers.

One run at a time per forwarder, across processes: a run first claims the forwarder's
lease with one conditional UPDATE (atomic on SQLite and PostgreSQL alike) and skips the
forwarder when another run holds it. No database transaction is held open while a SIEM is
slow: the network I/O happens between short writes. Each family's cursor is moved by
compare-and-set, so if a run's lease ever lapsed (its process hung past `Policy.lease`) and
another took over, the late one cannot move a cursor back or over records twice.

Delivery is at least once: a run that dies after sending and before moving the cursor
sends the batch again. Receivers deduplicate by (family, seq), or by the Idempotency-Key.
"""

import logging
import secrets
import time
from datetime import timedelta
from functools import partial

import orjson
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.utils import timezone

from audit import store
from audit.chain import FAMILIES
from audit.forwarding.batch import Batch, Sender
from audit.forwarding.records import as_json
from audit.forwarding.retry import DEFAULT, GaveUp, Policy, deliver
from audit.forwarding.senders import sender_for
from audit.models import ForwardCursor, Forwarder, ForwardOutbox

logger = logging.getLogger(__name__)

_OUTBOX_PAGE = 100


# --- cursors and leases ---------------------------------------------------------------------


def sync_cursors(forwarder: Forwarder, *, from_beginning: bool = False) -> None:
    """A cursor for each family the forwarder sends, starting at the family's current
    head (or at the first record kept, with `from_beginning`); none for the others, so a
    family sent again later starts afresh instead of replaying what it missed."""
    families = [f for f in FAMILIES if f in forwarder.families]
    ForwardCursor.objects.filter(forwarder=forwarder).exclude(family__in=families).delete()
    have = set(ForwardCursor.objects.filter(forwarder=forwarder).values_list("family", flat=True))
    for family in families:
        if family not in have:
            start = 0 if from_beginning else store.head(family).seq
            ForwardCursor.objects.get_or_create(
                forwarder=forwarder, family=family, defaults={"seq": start}
            )


def _claim(forwarder_id: int, policy: Policy) -> str | None:
    token = secrets.token_hex(16)
    now = timezone.now()
    claimed = (
        Forwarder.objects.filter(pk=forwarder_id, enabled=True)
        .filter(Q(lease_until__isnull=True) | Q(lease_until__lte=now))
        .update(lease_owner=token, lease_until=now + timedelta(seconds=policy.lease))
    )
    return token if claimed else None


def _release(forwarder_id: int, token: str) -> None:
    Forwarder.objects.filter(pk=forwarder_id, lease_owner=token).update(
        lease_owner="", lease_until=None
    )


def _advance(forwarder: Forwarder, family: str, seen: int, to: int) -> bool:
    moved = ForwardCursor.objects.filter(forwarder=forwarder, family=family, seq=seen).update(
        seq=to
    )
    return moved == 1


# --- outcomes -----------------------------------------------------------------------------


def _succeeded(forwarder: Forwarder, records: int, failures: int) -> None:
    Forwarder.objects.filter(pk=forwarder.pk).update(
        forwarded_total=F("forwarded_total") + records,
        failures_total=F("failures_total") + failures,
        last_success_at=timezone.now(),
        consecutive_failures=0,
        paused_until=None,
    )


def _failed(forwarder: Forwarder, reason: str, failures: int, **state: object) -> None:
    Forwarder.objects.filter(pk=forwarder.pk).update(
        failures_total=F("failures_total") + failures,
        last_error=reason[:2000],
        last_error_at=timezone.now(),
        **state,
    )


def _set_aside(
    forwarder: Forwarder, batch: Batch, seen: int, gave_up: GaveUp, policy: Policy
) -> bool:
    """The batch to the outbox and the cursor past it, in one transaction; then the
    forwarder pauses new records for a while (the destination is failing)."""
    now = timezone.now()
    wait = policy.outbox_delay(gave_up.failures)
    if gave_up.retry_after is not None:
        wait = max(wait, timedelta(seconds=gave_up.retry_after))
    try:
        with transaction.atomic():
            if not _advance(forwarder, batch.family, seen, batch.last_seq):
                return False
            ForwardOutbox.objects.create(
                forwarder=forwarder,
                family=batch.family,
                first_seq=batch.first_seq,
                last_seq=batch.last_seq,
                count=len(batch.records),
                batch_id=batch.batch_id,
                payload=orjson.dumps(batch.records).decode(),
                attempts=gave_up.failures,
                next_attempt_at=now + wait,
                last_error=gave_up.reason[:2000],
            )
    except IntegrityError:
        return False  # the forwarder was deleted meanwhile
    streak = forwarder.consecutive_failures + 1
    pause = policy.pause(streak)
    if gave_up.retry_after is not None:
        pause = max(pause, timedelta(seconds=gave_up.retry_after))
    _failed(
        forwarder,
        gave_up.reason,
        gave_up.failures,
        consecutive_failures=streak,
        paused_until=now + pause,
    )
    logger.warning(
        "forward.set_aside",
        extra={
            "forwarder": forwarder.name,
            "type": forwarder.type,
            "family": batch.family,
            "first_seq": batch.first_seq,
            "last_seq": batch.last_seq,
            "records": len(batch.records),
            "error": gave_up.reason,
        },
    )
    return True


# --- sending what is new ------------------------------------------------------------------


def due_forwarders() -> list[int]:
    """Enabled forwarders that are neither paused nor being run."""
    now = timezone.now()
    return list(
        Forwarder.objects.filter(enabled=True)
        .exclude(paused_until__gt=now)
        .exclude(lease_until__gt=now)
        .values_list("pk", flat=True)
    )


def forward(forwarder_id: int, policy: Policy = DEFAULT) -> int:
    """Send each family's records newer than the forwarder's cursor, a batch at a time,
    within the policy's time budget. Returns how many records were dealt with (delivered,
    or set aside in the outbox); 0 when the forwarder is disabled, paused or busy."""
    token = _claim(forwarder_id, policy)
    if token is None:
        return 0
    try:
        forwarder = Forwarder.objects.filter(pk=forwarder_id).first()
        if forwarder is None:
            return 0  # deleted since it was claimed
        if forwarder.paused_until is not None and forwarder.paused_until > timezone.now():
            return 0
        return _forward(forwarder, policy)
    finally:
        _release(forwarder_id, token)


def _forward(forwarder: Forwarder, policy: Policy) -> int:
    deadline = time.monotonic() + policy.budget
    sync_cursors(forwarder)
    cursors = dict(ForwardCursor.objects.filter(forwarder=forwarder).values_list("family", "seq"))
    sender: Sender = sender_for(forwarder)
    source = store.current()
    done = 0
    pending = [family for family in FAMILIES if family in cursors]
    while pending:
        for family in list(pending):  # a batch of each family in turn: none starves
            if time.monotonic() + policy.least > deadline:
                return done
            rows = source.read(family, after_seq=cursors[family], limit=policy.batch)
            if len(rows) < policy.batch:
                pending.remove(family)
            if not rows:
                continue
            batch = Batch(family, [as_json(family, row) for row in rows])
            try:
                failures = deliver(partial(sender.send, batch), policy, deadline)
            except GaveUp as gave_up:
                set_aside = _set_aside(forwarder, batch, cursors[family], gave_up, policy)
                return done + len(rows) if set_aside else done
            if not _advance(forwarder, family, cursors[family], batch.last_seq):
                return done  # another run moved this cursor: it owns the forwarder now
            _succeeded(forwarder, len(rows), failures)
            cursors[family] = batch.last_seq
            done += len(rows)
    return done


# --- the outbox ---------------------------------------------------------------------------


def retry_outbox(policy: Policy = DEFAULT) -> int:
    """Retry the due outbox entries of every enabled forwarder; returns how many entries
    went through (and were deleted)."""
    now = timezone.now()
    owners = set(
        ForwardOutbox.objects.filter(next_attempt_at__lte=now, forwarder__enabled=True)
        .order_by()
        .values_list("forwarder_id", flat=True)
        .distinct()
    )
    return sum(retry_forwarder_outbox(forwarder_id, policy) for forwarder_id in sorted(owners))


def retry_forwarder_outbox(forwarder_id: int, policy: Policy = DEFAULT) -> int:
    """One forwarder's due entries, oldest first, one attempt each; the first failure ends
    the run (the destination is still failing: the others wait for their own time)."""
    token = _claim(forwarder_id, policy)
    if token is None:
        return 0
    try:
        forwarder = Forwarder.objects.filter(pk=forwarder_id).first()
        return 0 if forwarder is None else _retry(forwarder, policy)
    finally:
        _release(forwarder_id, token)


def _retry(forwarder: Forwarder, policy: Policy) -> int:
    deadline = time.monotonic() + policy.budget
    sender = sender_for(forwarder)
    due = ForwardOutbox.objects.filter(
        forwarder=forwarder, next_attempt_at__lte=timezone.now()
    ).order_by("next_attempt_at", "id")[:_OUTBOX_PAGE]
    delivered = 0
    for entry in due:
        if time.monotonic() + policy.least > deadline:
            break
        batch = Batch(entry.family, orjson.loads(entry.payload), entry.batch_id)
        try:
            deliver(partial(sender.send, batch), policy, deadline, attempts=1)
        except GaveUp as gave_up:
            attempts = entry.attempts + 1
            wait = policy.outbox_delay(attempts)
            if gave_up.retry_after is not None:
                wait = max(wait, timedelta(seconds=gave_up.retry_after))
            ForwardOutbox.objects.filter(pk=entry.pk).update(
                attempts=attempts,
                next_attempt_at=timezone.now() + wait,
                last_error=gave_up.reason[:2000],
            )
            _failed(forwarder, gave_up.reason, gave_up.failures)
            logger.warning(
                "forward.outbox_retry_failed",
                extra={
                    "forwarder": forwarder.name,
                    "entry": entry.pk,
                    "attempts": attempts,
                    "error": gave_up.reason,
                },
            )
            break
        ForwardOutbox.objects.filter(pk=entry.pk).delete()
        _succeeded(forwarder, entry.count, 0)
        delivered += 1
    return delivered
