"""Syslog RFC 5424 to real UDP and TCP listeners on loopback."""

import json
import os
import socket
from datetime import UTC

import pytest

from audit.forwarding.jobs import forward
from audit.forwarding.syslog import UDP_LIMIT
from audit.models import Forwarder
from tests.forwarding.conftest import FAST, ForwarderFactory, append, closed_port
from tests.forwarding.receivers import TcpReceiver, UdpReceiver

pytestmark = pytest.mark.django_db


def test_it_sends_one_rfc5424_datagram_per_record(udp: UdpReceiver) -> None:
    fwd = ForwarderFactory(type="syslog_udp", destination=udp.address, families=["gateway"])
    seqs = append("gateway", 3)

    assert forward(fwd.pk, FAST) == 3

    messages = udp.messages(3)
    assert [m.record["seq"] for m in messages] == seqs
    first = messages[0]
    assert (first.version, first.facility, first.severity) == (1, 16, 6)  # local0, info
    assert first.timestamp.tzinfo is not None
    assert first.timestamp.astimezone(UTC).isoformat() == "2026-11-01T12:00:00+00:00"
    assert (first.app, first.msgid, first.procid) == ("thinkwatch", "gateway", str(os.getpid()))
    assert first.hostname == socket.gethostname()
    assert first.sd == {"thinkwatch@32473": {"family": "gateway", "seq": str(seqs[0])}}
    assert first.record["request_id"] == "req-0"
    assert first.record["chain_hash"]


@pytest.mark.parametrize(
    ("family", "fields", "severity"),
    [
        ("gateway", {"status_code": 502}, 3),
        ("gateway", {"status_code": 429}, 4),
        ("access", {"status_code": 404}, 4),
        ("mcp", {"status": "timeout"}, 3),
        ("mcp", {"status": "denied"}, 4),
        ("mcp", {"status": "ok"}, 6),
        ("admin", {"action": "auth.sign_in_failed"}, 4),
        ("admin", {"action": "update"}, 5),
    ],
)
def test_it_gives_each_record_the_severity_of_its_outcome(
    udp: UdpReceiver, family: str, fields: dict[str, object], severity: int
) -> None:
    fwd = ForwarderFactory(type="syslog_udp", destination=udp.address, families=[family])
    append(family, 1, **fields)

    forward(fwd.pk, FAST)

    [message] = udp.messages(1)
    assert (message.msgid, message.severity) == (family, severity)


def test_it_uses_the_facility_configured(udp: UdpReceiver) -> None:
    fwd = ForwarderFactory(type="syslog_udp", destination=udp.address, facility=13)
    append("gateway", 1)

    forward(fwd.pk, FAST)

    assert udp.messages(1)[0].facility == 13


def test_it_sends_an_oversized_record_over_udp_without_its_largest_fields(
    udp: UdpReceiver,
) -> None:
    fwd = ForwarderFactory(type="syslog_udp", destination=udp.address, families=["admin"])
    [seq] = append("admin", 1, after={"system_prompt": "x" * 5000})

    forward(fwd.pk, FAST)

    [message] = udp.messages(1)
    assert len(message.raw) <= UDP_LIMIT
    assert message.record["truncated"] is True
    assert message.record["omitted_fields"] == ["after"]
    assert (message.record["seq"], message.record["before"]) == (seq, {"enabled": True})


def test_it_frames_records_over_tcp_by_octet_counting(tcp: TcpReceiver) -> None:
    fwd = ForwarderFactory(type="syslog_tcp", destination=tcp.address, families=["gateway", "mcp"])
    gateway = append("gateway", 3, error_message="line one\nline two")
    mcp = append("mcp", 2)

    assert forward(fwd.pk, FAST) == 5

    messages = tcp.messages(5)
    got = sorted((m.msgid, m.record["seq"]) for m in messages)
    assert got == sorted([("gateway", s) for s in gateway] + [("mcp", s) for s in mcp])
    assert messages[0].record["error_message"] == "line one\nline two"  # newlines are data
    assert len(tcp.connections) == 1


def test_it_keeps_the_tcp_connection_between_runs(tcp: TcpReceiver) -> None:
    fwd = ForwarderFactory(type="syslog_tcp", destination=tcp.address)
    append("gateway", 1)
    forward(fwd.pk, FAST)
    append("gateway", 1, start=1)

    forward(fwd.pk, FAST)

    assert len(tcp.messages(2)) == 2
    assert len(tcp.connections) == 1


def test_it_reconnects_when_the_receiver_dropped_the_connection(tcp: TcpReceiver) -> None:
    fwd = ForwarderFactory(type="syslog_tcp", destination=tcp.address)
    append("gateway", 1)
    forward(fwd.pk, FAST)
    tcp.messages(1)
    tcp.drop_connections()
    append("gateway", 2, start=1)

    forward(fwd.pk, FAST)

    assert [m.record["request_id"] for m in tcp.messages(3)] == ["req-0", "req-1", "req-2"]
    assert len(tcp.connections) == 2


def test_it_puts_a_batch_in_the_outbox_when_no_tcp_receiver_listens() -> None:
    fwd = ForwarderFactory(type="syslog_tcp", destination=f"127.0.0.1:{closed_port()}")
    seqs = append("gateway", 2)

    forward(fwd.pk, FAST)

    [entry] = fwd.outbox.all()
    assert (entry.first_seq, entry.last_seq, entry.count, entry.attempts) == (
        seqs[0],
        seqs[-1],
        2,
        FAST.attempts,
    )
    assert "Connection refused" in entry.last_error
    assert [r["seq"] for r in json.loads(entry.payload)] == seqs
    fwd = Forwarder.objects.get(pk=fwd.pk)
    assert fwd.failures_total == FAST.attempts
    assert fwd.cursors.get().seq == seqs[-1]
