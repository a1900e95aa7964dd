"""The lossless path of every log record, from the request to the store.

1. `submit` (on the request's thread or event loop) appends the record, as one JSON line, to
   this process's segment file under DATA_DIR/auditq/ with a single write(2): a few
   microseconds, no fsync. Once `submit` returns the record is *acknowledged*: it is in the
   kernel's page cache and survives the process being killed (SIGKILL, OOM), which is what
   takes gateways down; with THINKWATCH_AUDIT_FSYNC_SECONDS it also survives the host
   losing power, to within that interval.
2. A thread of the same process delivers batches to the sink and then moves the segment's
   cursor (a small file beside it) past what was delivered:
   - embedded mode (no REDIS_URL): the sink is the store (SQL database or ClickHouse);
   - production (REDIS_URL): the sink is a Redis stream per family, which Celery drains into
     the store (`drain_streams`), acknowledging a stream entry only after the store wrote it.
   A sink that is down leaves the records in the segment and the queue; delivery is retried
   with backoff for as long as it takes.
3. At start, and every half minute, a process takes over the segments of processes that
   died (a segment whose lock can be taken has no living writer) and delivers what lies
   past their cursors. Those records may have been delivered just before the death: they
   are delivered as *uncertain*, and the store skips uids it already holds, so each record
   is written once.
"""

import fcntl
import logging
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
from django.conf import settings
from django.db import DataError, IntegrityError, connection

from audit import chain
from audit.models import new_uid

logger = logging.getLogger(__name__)

Record = dict[str, Any]
Hook = Callable[[list[Record]], None]

SEGMENT_BYTES = 64 * 1024 * 1024
_RETRY_SECONDS = (0.5, 1, 2, 5, 10)
_ORPHAN_SCAN_SECONDS = 30
_STREAM_GROUP = "store"
_CLAIM_IDLE_MS = 30_000
_CURSOR_WIDTH = 20

# Errors that say the store will never take a record, however often it is offered (a value
# it refuses). Anything else (connection lost, server down) is worth retrying.
_REFUSED = (IntegrityError, DataError, ValueError, TypeError, KeyError)

_after_store: dict[str, list[Hook]] = {}
_before_store: dict[str, list[Hook]] = {}


def after_store(family: str, hook: Hook) -> None:
    """Call `hook(records)` with each batch of `family` once the store has written it (the
    records then carry seq and chain_hash). A failing hook is logged, never retried."""
    if hook not in _after_store.setdefault(family, []):
        _after_store[family].append(hook)


def before_store(family: str, hook: Hook) -> None:
    """Call `hook(records)` before a batch of `family` is written; it may change the records
    in place (offloading large bodies, say). It runs off the request path, and again if the
    batch is retried, so it must be idempotent. An exception fails the batch (retried)."""
    if hook not in _before_store.setdefault(family, []):
        _before_store[family].append(hook)


# --- segments ------------------------------------------------------------------------------


class Segment:
    """One append-only file of JSON lines and its cursor: the offset before which every
    record was delivered. Held under an exclusive flock by the process writing or replaying
    it, so no two processes deliver the same segment."""

    def __init__(self, path: Path, fd: int, size: int, cursor: int, active: bool) -> None:
        self.path = path
        self.fd = fd
        self.size = size
        self.cursor = cursor
        self.active = active
        self._cursor_fd = os.open(self.cursor_path, os.O_RDWR | os.O_CREAT, 0o600)

    @property
    def cursor_path(self) -> Path:
        return self.path.with_suffix(".cursor")

    @classmethod
    def create(cls, directory: Path) -> "Segment":
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{time.time_ns()}-{os.getpid()}.seg"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return cls(path, fd, 0, 0, active=True)

    @classmethod
    def adopt(cls, path: Path) -> "Segment | None":
        """Lock a segment whose writer is gone; None if its writer still holds it."""
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        if not path.exists():  # delivered and removed by its last holder meanwhile
            os.close(fd)
            return None
        cursor_path = path.with_suffix(".cursor")
        try:
            cursor = int(cursor_path.read_bytes().strip() or 0)
        except (FileNotFoundError, ValueError):
            cursor = 0
        return cls(path, fd, os.fstat(fd).st_size, cursor, active=False)

    def save_cursor(self, offset: int) -> None:
        self.cursor = offset
        os.pwrite(self._cursor_fd, str(offset).rjust(_CURSOR_WIDTH).encode(), 0)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        self.cursor_path.unlink(missing_ok=True)
        os.close(self._cursor_fd)
        os.close(self.fd)  # releases the lock last

    def close(self) -> None:
        os.close(self._cursor_fd)
        os.close(self.fd)


@dataclass(slots=True)
class Entry:
    family: str
    record: Record
    segment: Segment | None  # None: the segment write failed, the record is only in memory
    start: int
    end: int
    uncertain: bool = False


def _encode(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def encode(family: str, record: Record) -> bytes:
    return orjson.dumps([family, record], default=_encode) + b"\n"


def decode(line: bytes) -> tuple[str, Record]:
    """A line back into (family, record) with the values the store expects."""
    family, record = orjson.loads(line)
    for column in chain.columns(family):
        value = record.get(column.name)
        if value is None:
            continue
        if column.kind == "datetime" and isinstance(value, str):
            record[column.name] = datetime.fromisoformat(value)
        elif column.kind == "decimal":
            record[column.name] = Decimal(str(value))
    return family, record


# --- sinks ---------------------------------------------------------------------------------


def _store_batch(family: str, records: list[Record], uncertain: bool) -> None:
    from audit import store

    for hook in _before_store.get(family, ()):
        hook(records)
    store.current().append(family, records, uncertain=uncertain)
    for hook in _after_store.get(family, ()):
        try:
            hook(records)
        except Exception:
            logger.exception("audit.after_store_failed", extra={"family": family})


def _store_separately(
    family: str, records: list[Record], uncertain: bool
) -> list[tuple[Record, Exception]]:
    """After the store refused a batch: write its records one by one, so one it will never
    take does not hold back the others. Returns the refused records with their errors;
    a transient error is raised (the batch is retried whole)."""
    refused: list[tuple[Record, Exception]] = []
    for record in records:
        try:
            _store_batch(family, [record], uncertain)
        except _REFUSED as exc:
            refused.append((record, exc))
    return refused


def _quarantine(family: str, refused: list[tuple[Record, Exception]]) -> None:
    """Keep records the store refused in DATA_DIR/auditq/refused/<family>.jsonl (never
    dropped: an operator can fix and replay them), and say so without their content."""
    directory = Path(settings.DATA_DIR) / "auditq" / "refused"
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / f"{family}.jsonl", "ab") as file:
        for record, exc in refused:
            file.write(
                orjson.dumps(
                    {"family": family, "error": type(exc).__name__, "record": record},
                    default=_encode,
                )
                + b"\n"
            )
    for record, exc in refused:
        logger.error(
            "audit.record_refused",
            extra={"family": family, "uid": record.get("uid"), "error": type(exc).__name__},
        )


def stream_key(family: str) -> str:
    return f"{settings.AUDIT_STREAM_PREFIX}audit:{family}"


_redis_local = threading.local()


def _redis() -> Any:
    """A synchronous Redis client for this thread (the drainer and Celery are threads)."""
    import redis

    found = getattr(_redis_local, "client", None)
    if found is None or getattr(_redis_local, "url", None) != settings.REDIS_URL:
        found = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=10
        )
        _redis_local.client, _redis_local.url = found, settings.REDIS_URL
    return found


def _stream_batch(family: str, entries: list[Entry]) -> None:
    pipe = _redis().pipeline(transaction=False)
    key = stream_key(family)
    for entry in entries:
        fields = {"r": encode(family, entry.record)}
        if entry.uncertain:
            fields["u"] = b"1"
        pipe.xadd(key, fields)
    pipe.execute()


# --- the pipeline --------------------------------------------------------------------------


class Pipeline:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[Entry] = deque()
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._segment: Segment | None = None
        self._retiring: list[Segment] = []  # rotated or adopted: removed once delivered
        self._failures = 0
        self._last_scan = 0.0
        self._last_sync = time.monotonic()
        self.dropped = 0  # records that could not even be written to the segment
        self.refused = 0  # records the store will never take, kept in auditq/refused/
        self.delivered = 0

    # -- the request side --

    def submit(self, family: str, record: Record) -> None:
        if "uid" not in record or not record["uid"]:
            record["uid"] = new_uid()
        line = encode(family, record)
        with self._lock:
            try:
                segment = self._writable(len(line))
                start = segment.size
                os.write(segment.fd, line)
            except OSError:
                # A full or broken disk: the record still goes to the sink from memory, and
                # the failure is counted (`dropped`: not durable) and logged without content.
                self.dropped += 1
                logger.exception("audit.segment_write_failed", extra={"family": family})
                self._queue.append(Entry(family, record, None, 0, 0))
            else:
                segment.size += len(line)
                self._queue.append(Entry(family, record, segment, start, segment.size))
            if self._idle.is_set():  # Event.clear takes a lock: not on every record
                self._idle.clear()
        if len(self._queue) >= settings.AUDIT_BATCH_SIZE and not self._wake.is_set():
            self._wake.set()

    def _writable(self, size: int) -> Segment:
        segment = self._segment
        if segment is None or segment.size + size > SEGMENT_BYTES:
            if segment is not None:
                segment.active = False
                self._retiring.append(segment)
            segment = self._segment = Segment.create(self._directory())
        return segment

    @staticmethod
    def _directory() -> Path:
        return Path(settings.DATA_DIR) / "auditq"

    # -- lifecycle --

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stopping = False
        self._adopt_orphans()
        self._thread = threading.Thread(target=self._run, name="audit-pipeline", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued (the segment keeps whatever could not be) and stop."""
        self._stopping = True
        self._wake.set()
        if self._thread:
            self._thread.join(timeout)
            self._thread = None
        self._deliver_all(final=True)
        connection.close()

    def flush(self, timeout: float = 10.0, *, through_streams: bool = True) -> bool:
        """Block until everything submitted so far is delivered to the sink; with Redis and
        `through_streams`, also drain the streams into the store here (tests, tools)."""
        deadline = time.monotonic() + timeout
        if self._thread is None or not self._thread.is_alive():
            self._deliver_all(final=True)
        while self._queue or not self._idle.is_set():
            if time.monotonic() > deadline:
                return False
            self._wake.set()
            time.sleep(0.005)
        if settings.REDIS_URL and through_streams:
            while drain_streams(max_seconds=max(0.1, deadline - time.monotonic())):
                if time.monotonic() > deadline:
                    return False
        return True

    def stats(self) -> dict[str, Any]:
        oldest = self._queue[0].record.get("created_at") if self._queue else None
        age = 0.0
        if isinstance(oldest, datetime):
            age = max(0.0, time.time() - oldest.timestamp())
        return {
            "depth": len(self._queue),
            "dropped": self.dropped,
            "refused": self.refused,
            "delivered": self.delivered,
            "oldest_seconds": round(age, 3),
            "sink": "redis" if settings.REDIS_URL else "store",
            "failing": self._failures > 0,
        }

    def reset_after_fork(self) -> None:
        """A forked child (a Celery worker) starts empty: the parent's segment, lock and
        queue stay the parent's."""
        self._lock = threading.Lock()
        self._queue = deque()
        self._wake, self._idle = threading.Event(), threading.Event()
        self._idle.set()
        self._thread = None
        self._segment = None
        self._retiring = []

    # -- delivery --

    def _run(self) -> None:
        # One connection for the thread's life: reopening SQLite per batch would checkpoint
        # the WAL every time.
        try:
            while not self._stopping:
                self._wake.wait(settings.AUDIT_FLUSH_SECONDS)
                self._wake.clear()
                self._deliver_all(final=False)
                now = time.monotonic()
                if now - self._last_scan > _ORPHAN_SCAN_SECONDS:
                    self._adopt_orphans()
                fsync = settings.AUDIT_FSYNC_SECONDS
                if fsync and now - self._last_sync > fsync:
                    self._sync()
        finally:
            connection.close()

    def _sync(self) -> None:
        self._last_sync = time.monotonic()
        segment = self._segment
        if segment is not None:
            try:
                os.fsync(segment.fd)
            except OSError:
                logger.exception("audit.fsync_failed")

    def _deliver_all(self, final: bool) -> None:
        while self._queue:
            with self._lock:
                count = min(settings.AUDIT_BATCH_SIZE, len(self._queue))
                batch = [self._queue.popleft() for _ in range(count)]
            failed = self._deliver(batch)
            self._advance(batch, failed)
            if failed:
                with self._lock:
                    self._queue.extendleft(reversed(failed))
                self._failures += 1
                if final:
                    return
                time.sleep(_RETRY_SECONDS[min(self._failures, len(_RETRY_SECONDS)) - 1])
                return
            self._failures = 0
            self.delivered += len(batch)
        self._retire()
        if not self._queue:
            self._idle.set()

    def _deliver(self, batch: list[Entry]) -> list[Entry]:
        """Deliver `batch` family by family; returns the entries that were not delivered."""
        groups: dict[str, list[Entry]] = {}
        for entry in batch:
            groups.setdefault(entry.family, []).append(entry)
        failed: list[Entry] = []
        for family, entries in groups.items():
            uncertain = any(e.uncertain for e in entries)
            try:
                if settings.REDIS_URL:
                    _stream_batch(family, entries)
                else:
                    try:
                        _store_batch(family, [e.record for e in entries], uncertain)
                    except _REFUSED:
                        refused = _store_separately(family, [e.record for e in entries], uncertain)
                        _quarantine(family, refused)
                        self.refused += len(refused)
            except Exception:
                connection.close()  # a broken connection is not reused for the retry
                failed.extend(entries)
                logger.exception(
                    "audit.delivery_failed",
                    extra={"family": family, "records": len(entries), "queued": len(self._queue)},
                )
        failed.sort(key=lambda e: (id(e.segment), e.start))
        return failed

    def _advance(self, batch: list[Entry], failed: list[Entry]) -> None:
        """Move each segment's cursor to the first record not yet delivered."""
        firsts: dict[int, Entry] = {}
        for entry in failed:
            if entry.segment is not None:
                firsts.setdefault(id(entry.segment), entry)
        done: dict[int, tuple[Segment, int]] = {}
        for entry in batch:
            if entry.segment is None:
                continue
            key = id(entry.segment)
            if key in firsts:
                done[key] = (entry.segment, firsts[key].start)
            else:
                done[key] = (entry.segment, max(entry.end, done[key][1] if key in done else 0))
        for segment, offset in done.values():
            if offset > segment.cursor:
                try:
                    segment.save_cursor(offset)
                except OSError:
                    logger.exception("audit.cursor_write_failed")

    def _retire(self) -> None:
        """Remove rotated and adopted segments that are wholly delivered."""
        for segment in list(self._retiring):
            if segment.cursor >= segment.size:
                self._retiring.remove(segment)
                segment.remove()

    def _adopt_orphans(self) -> None:
        self._last_scan = time.monotonic()
        directory = self._directory()
        if not directory.is_dir():
            return
        own = {s.path for s in (self._segment, *self._retiring) if s is not None}
        for path in sorted(directory.glob("*.seg")):
            if path in own:
                continue
            segment = Segment.adopt(path)
            if segment is None:
                continue
            entries = self._read_orphan(segment)
            with self._lock:
                self._queue.extend(entries)
                self._retiring.append(segment)
                if entries:
                    self._idle.clear()
            if entries:
                logger.warning(
                    "audit.segment_adopted",
                    extra={"segment": path.name, "records": len(entries)},
                )
                self._wake.set()

    @staticmethod
    def _read_orphan(segment: Segment) -> list[Entry]:
        with open(segment.path, "rb") as file:
            file.seek(segment.cursor)
            data = file.read()
        entries: list[Entry] = []
        offset = segment.cursor
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn by a crash in the middle of a write: never acknowledged
            start, offset = offset, offset + len(line)
            try:
                family, record = decode(line)
            except (ValueError, KeyError):
                logger.error("audit.segment_line_unreadable", extra={"segment": segment.path.name})
                continue
            entries.append(Entry(family, record, segment, start, offset, uncertain=True))
        segment.size = offset
        return entries


pipeline = Pipeline()
os.register_at_fork(after_in_child=pipeline.reset_after_fork)


def submit(family: str, record: Record) -> None:
    pipeline.submit(family, record)


def stats() -> dict[str, Any]:
    data = pipeline.stats()
    if settings.REDIS_URL:
        try:
            client = _redis()
            data["stream_depth"] = sum(int(client.xlen(stream_key(f))) for f in chain.FAMILIES)
        except Exception:
            data["stream_depth"] = None
    return data


class FamilyWriter:
    """One family's view of the pipeline (what the gateway and MCP code hold)."""

    def __init__(self, family: str) -> None:
        self.family = family

    def submit(self, record: Record) -> None:
        pipeline.submit(self.family, record)

    def start(self) -> None:
        pipeline.start()

    def stop(self, timeout: float = 10.0) -> None:
        pipeline.stop(timeout)

    def flush(self, timeout: float = 10.0) -> bool:
        return pipeline.flush(timeout)

    @property
    def depth(self) -> int:
        return len(pipeline._queue)


# --- production: Redis streams -> store, run by Celery ----------------------------------------


def drain_streams(max_seconds: float = 20.0, batch: int | None = None) -> int:
    """Write what the streams hold into the store; returns how many records were written.

    Each worker reads its own unacknowledged entries first (a previous run that failed),
    then claims entries another consumer left unacknowledged for half a minute (a worker
    that died), then new ones. Entries are acknowledged and deleted only after the store
    wrote them; redelivered entries are written as uncertain (skipped if already there).
    """
    import redis

    client = _redis()
    consumer = f"{socket.gethostname()}-{os.getpid()}"
    count = batch or settings.AUDIT_BATCH_SIZE
    deadline = time.monotonic() + max_seconds
    written = 0
    for family in chain.FAMILIES:
        key = stream_key(family)
        try:
            client.xgroup_create(key, _STREAM_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        while time.monotonic() < deadline:
            entries, uncertain = _next_entries(client, key, consumer, count)
            if not entries:
                break
            ids = [entry_id for entry_id, _ in entries]
            records = []
            for _, fields in entries:
                _, record = decode(fields[b"r"])
                records.append(record)
                uncertain = uncertain or fields.get(b"u") == b"1"
            try:
                _store_batch(family, records, uncertain)
            except _REFUSED:
                refused = _store_separately(family, records, uncertain)
                _quarantine(family, refused)
            pipe = client.pipeline(transaction=False)
            pipe.xack(key, _STREAM_GROUP, *ids)
            pipe.xdel(key, *ids)
            pipe.execute()
            written += len(records)
    return written


def _next_entries(client: Any, key: str, consumer: str, count: int) -> tuple[list[Any], bool]:
    own = client.xreadgroup(_STREAM_GROUP, consumer, {key: "0"}, count=count)
    if own and own[0][1]:
        return own[0][1], True
    claimed = client.xautoclaim(key, _STREAM_GROUP, consumer, _CLAIM_IDLE_MS, "0-0", count=count)
    if claimed and claimed[1]:
        return claimed[1], True
    new = client.xreadgroup(_STREAM_GROUP, consumer, {key: ">"}, count=count)
    if new and new[0][1]:
        return new[0][1], False
    return [], False
