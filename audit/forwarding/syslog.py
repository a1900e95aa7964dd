"""Syslog (RFC 5424) over UDP (RFC 5426) and TCP (RFC 6587, octet counting).

Each record is one message:

    <PRI>1 TIMESTAMP HOSTNAME thinkwatch PROCID FAMILY [thinkwatch@32473 family="" seq=""] BOM{..}

PRI is facility * 8 + severity; the timestamp is the record's own `created_at`; MSGID is
the family; the structured-data element names the record (32473 is the enterprise number
RFC 5612 reserves for documentation: ThinkWatch has none of its own); MSG is the record's
JSON (audit/forwarding/records.py) after the UTF-8 byte order mark RFC 5424 asks for.

UDP: one datagram per record, at most UDP_LIMIT bytes, the size RFC 5426 says every
receiver should accept. A larger record (an admin event with a big before/after) is sent
with its largest fields left out, listed in "omitted_fields", and "truncated": true; the
full record is in the store and goes whole over TCP, webhooks and Kafka. UDP says nothing
of loss: use it only where losing a message is acceptable.

TCP: one connection per forwarder, kept between runs and checked before reuse; on any
error it is closed, and the next attempt connects again. Syslog over TCP has no
acknowledgement: bytes accepted by the kernel just before the receiver drops the
connection can be lost without an error. Use a webhook or Kafka where that matters.
"""

import contextlib
import os
import select
import socket
import threading
import time
from typing import Any

from audit.forwarding.batch import Batch, Record
from audit.forwarding.records import dumps
from audit.forwarding.retry import Undelivered

UDP_LIMIT = 2048
ENTERPRISE_ID = 32473
APP_NAME = "thinkwatch"
BOM = b"\xef\xbb\xbf"

# Kept in a datagram that has to lose fields: what identifies the record.
_KEPT = ("family", "seq", "chain_hash", "uid", "created_at", "request_id", "action", "status")

# Severities (RFC 5424 §6.2.1).
ERROR, WARNING, NOTICE, INFO = 3, 4, 5, 6
_MCP_ERRORS = frozenset({"upstream_error", "timeout"})


def severity(record: Record) -> int:
    """Failures the installation caused are errors, refusals and client faults warnings,
    admin changes notices (normal but significant), everything else information."""
    family = record["family"]
    if family in ("gateway", "access"):
        code = int(record.get("status_code") or 0)
        return ERROR if code >= 500 else WARNING if code >= 400 else INFO
    if family == "mcp":
        status = record.get("status") or "ok"
        return INFO if status == "ok" else ERROR if status in _MCP_ERRORS else WARNING
    if family == "admin":
        return WARNING if record.get("action") == "auth.sign_in_failed" else NOTICE
    return INFO


def _hostname() -> str:
    name = socket.gethostname()
    printable = name.isascii() and name.isprintable() and " " not in name
    return name[:255] if name and printable else "-"


_HOST = _hostname()


def _sd_value(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def header(record: Record, facility: int) -> bytes:
    """Everything before MSG, ending with the space and the BOM."""
    pri = facility * 8 + severity(record)
    stamp = record.get("created_at") or "-"
    sd = (
        f'[{APP_NAME}@{ENTERPRISE_ID} family="{_sd_value(record["family"])}" '
        f'seq="{_sd_value(record["seq"])}"]'
    )
    text = f"<{pri}>1 {stamp} {_HOST} {APP_NAME} {os.getpid()} {record['family']} {sd} "
    return text.encode() + BOM


def message(record: Record, facility: int, limit: int | None = None) -> bytes:
    """One RFC 5424 message; with `limit`, made to fit in that many bytes."""
    head = header(record, facility)
    body = dumps(record)
    if limit is None or len(head) + len(body) <= limit:
        return head + body
    return head + _fit(record, limit - len(head))


def _fit(record: Record, room: int) -> bytes:
    slim = dict(record, truncated=True, omitted_fields=[])
    sizes = sorted((len(dumps(value)), name) for name, value in record.items() if name not in _KEPT)
    while sizes:
        body = dumps(slim)
        if len(body) <= room:
            return body
        _, name = sizes.pop()
        del slim[name]
        slim["omitted_fields"].append(name)
    return dumps(slim)[:room]  # only identity left: cannot happen with UDP_LIMIT


def octet_counted(msg: bytes) -> bytes:
    """RFC 6587 §3.4.1: MSG-LEN SP SYSLOG-MSG."""
    return str(len(msg)).encode() + b" " + msg


def _remaining(deadline: float) -> float:
    left = deadline - time.monotonic()
    if left <= 0:
        raise Undelivered("the run's time was up before the batch was sent")
    return left


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


class UdpSender:
    def __init__(self, host: str, port: int, facility: int) -> None:
        self.host, self.port, self.facility = host, port, facility

    def send(self, batch: Batch, deadline: float) -> None:
        where = f"syslog UDP {self.host}:{self.port}"
        try:
            family, _, _, _, address = socket.getaddrinfo(
                self.host, self.port, type=socket.SOCK_DGRAM
            )[0]
            with socket.socket(family, socket.SOCK_DGRAM) as sock:
                sock.settimeout(_remaining(deadline))
                for record in batch.records:
                    sock.sendto(message(record, self.facility, UDP_LIMIT), address)
        except OSError as exc:
            raise Undelivered(f"{where}: {_reason(exc)}") from None

    def close(self) -> None:
        """Nothing is kept: a socket per batch."""


class TcpSender:
    """A connection kept for the life of the process, one per forwarder and destination."""

    def __init__(self, host: str, port: int, facility: int) -> None:
        self.host, self.port, self.facility = host, port, facility
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def send(self, batch: Batch, deadline: float) -> None:
        data = b"".join(octet_counted(message(r, self.facility)) for r in batch.records)
        with self._lock:
            try:
                sock = self._connection(deadline)
                sock.settimeout(_remaining(deadline))
                sock.sendall(data)
            except OSError as exc:
                self.close()
                where = f"syslog TCP {self.host}:{self.port}"
                raise Undelivered(f"{where}: {_reason(exc)}") from None

    def _connection(self, deadline: float) -> socket.socket:
        if self._sock is not None and not _usable(self._sock):
            self.close()
        if self._sock is None:
            timeout = min(_remaining(deadline), 5.0)
            self._sock = socket.create_connection((self.host, self.port), timeout=timeout)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
        self._sock = None


def _usable(sock: socket.socket) -> bool:
    """A syslog receiver never writes: a readable socket means it closed (or reset) the
    connection, and writing to it would lose the first batch."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return False
    return not readable
