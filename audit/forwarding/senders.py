"""The sender for a forwarder's type. Syslog TCP and Kafka senders hold a connection, so
they are kept per process and per configuration: a forwarder edited in the console gets a
new one on its next run, and the old one is closed."""

import threading
from typing import Any

from audit.forwarding.batch import Sender
from audit.forwarding.destinations import host_port
from audit.forwarding.kafka import KafkaSender
from audit.forwarding.syslog import TcpSender, UdpSender
from audit.forwarding.webhook import WebhookSender
from audit.models import Forwarder, ForwarderType

_kept: dict[int, tuple[tuple[Any, ...], Sender]] = {}
_lock = threading.Lock()


def _config(forwarder: Forwarder) -> tuple[Any, ...]:
    return (forwarder.type, forwarder.destination, forwarder.topic, forwarder.facility)


def _make(forwarder: Forwarder) -> Sender:
    kind = forwarder.type
    if kind == ForwarderType.SYSLOG_UDP:
        return UdpSender(*host_port(forwarder.destination), forwarder.facility)
    if kind == ForwarderType.SYSLOG_TCP:
        return TcpSender(*host_port(forwarder.destination), forwarder.facility)
    if kind == ForwarderType.WEBHOOK:
        return WebhookSender(forwarder.name, forwarder.destination, forwarder.reveal_secret())
    if kind == ForwarderType.KAFKA:
        return KafkaSender(forwarder.destination.replace(" ", ""), forwarder.topic)
    raise ValueError(f"unknown forwarder type {kind!r}")


def sender_for(forwarder: Forwarder) -> Sender:
    if forwarder.type not in (ForwarderType.SYSLOG_TCP, ForwarderType.KAFKA):
        return _make(forwarder)
    config = _config(forwarder)
    with _lock:
        kept = _kept.get(forwarder.pk)
        if kept is not None and kept[0] == config:
            return kept[1]
        if kept is not None:
            kept[1].close()
        sender = _make(forwarder)
        _kept[forwarder.pk] = (config, sender)
        return sender


def close_all() -> None:
    with _lock:
        for _, sender in _kept.values():
            sender.close()
        _kept.clear()
