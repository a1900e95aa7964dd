"""Kafka through confluent-kafka, against a real Kafka-protocol broker (Tansu) on loopback."""

import json
import secrets
import time
from dataclasses import replace

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from audit.forwarding.jobs import forward
from audit.models import Forwarder, ForwardOutbox
from tests.forwarding.conftest import FAST, ForwarderFactory, append, closed_port

pytestmark = pytest.mark.django_db

KAFKA = replace(FAST, timeout=5.0, budget=10.0)


def new_topic(broker: str) -> str:
    name = f"tw-audit-{secrets.token_hex(4)}"
    admin = AdminClient({"bootstrap.servers": broker})  # kept until the topic exists
    admin.create_topics([NewTopic(name, 1, 1)])[name].result(10)
    return name


def consume(broker: str, topic: str, count: int) -> list[tuple[bytes, dict, dict]]:
    consumer = Consumer(
        {"bootstrap.servers": broker, "group.id": topic, "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: list[tuple[bytes, dict, dict]] = []
    deadline = time.monotonic() + 15
    while len(got) < count and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is None or message.error():
            continue
        got.append((message.key(), json.loads(message.value()), dict(message.headers() or [])))
    consumer.close()
    return got


def test_it_produces_each_record_keyed_by_family(kafka_broker: str) -> None:
    topic = new_topic(kafka_broker)
    fwd = ForwarderFactory(
        type="kafka", destination=kafka_broker, topic=topic, families=["gateway", "mcp"]
    )
    gateway = append("gateway", 3)
    mcp = append("mcp", 2)

    assert forward(fwd.pk, KAFKA) == 5

    messages = consume(kafka_broker, topic, 5)
    assert [(key, value["seq"]) for key, value, _ in messages] == [
        *((b"gateway", s) for s in gateway),
        *((b"mcp", s) for s in mcp),
    ]
    assert messages[0][1]["request_id"] == "req-0"
    assert len(messages[0][2]["thinkwatch-batch"]) == 32
    fwd.refresh_from_db()
    assert (fwd.forwarded_total, fwd.failures_total) == (5, 0)


def test_it_continues_from_its_cursor_on_the_next_run(kafka_broker: str) -> None:
    topic = new_topic(kafka_broker)
    fwd = ForwarderFactory(type="kafka", destination=kafka_broker, topic=topic)
    first = append("gateway", 2)
    forward(fwd.pk, KAFKA)
    second = append("gateway", 2, start=2)

    forward(fwd.pk, KAFKA)

    assert [value["seq"] for _, value, _ in consume(kafka_broker, topic, 4)] == first + second


def test_it_puts_a_batch_no_broker_confirmed_in_the_outbox() -> None:
    servers = f"127.0.0.1:{closed_port()}"
    fwd = ForwarderFactory(type="kafka", destination=servers, topic="audit")
    seqs = append("gateway", 2)

    forward(fwd.pk, replace(FAST, attempts=1, timeout=2.0))

    [entry] = ForwardOutbox.objects.all()
    assert (entry.first_seq, entry.last_seq) == (seqs[0], seqs[-1])
    assert entry.last_error.startswith(
        f"Kafka {servers} topic audit: 2 of 2 records not confirmed ("
    )
    fwd = Forwarder.objects.get(pk=fwd.pk)
    assert fwd.failures_total == 1
    assert fwd.cursors.get().seq == seqs[-1]
