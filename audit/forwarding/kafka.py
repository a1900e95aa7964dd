"""Kafka, through confluent-kafka (librdkafka): each record is one message on the
forwarder's topic, keyed by its family (so one family's records stay in order within a
partition), with the batch id in a `thinkwatch-batch` header.

A batch counts as delivered only when the broker confirmed every message (acks=all,
idempotent producer) within the run's time; otherwise whatever is still queued is purged,
so nothing of it trickles out later, and the batch goes to the outbox whole (a message
confirmed before the failure is sent again then: receivers deduplicate by family and seq).
"""

import logging
import threading
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from audit.forwarding.batch import Batch
from audit.forwarding.records import dumps
from audit.forwarding.retry import Undelivered

logger = logging.getLogger(__name__)


class KafkaSender:
    """One producer per forwarder for the life of the process (librdkafka keeps its
    connections and metadata), replaced after a failure."""

    def __init__(self, servers: str, topic: str) -> None:
        self.servers, self.topic = servers, topic
        self._producer: Producer | None = None
        self._errors: list[str] = []
        self._lock = threading.Lock()

    def _make(self) -> Producer:
        return Producer(
            {
                "bootstrap.servers": self.servers,
                "client.id": "thinkwatch-forwarder",
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "socket.connection.setup.timeout.ms": 5000,
                # Connection failures reach error_cb, and from there the forwarder's
                # last error; librdkafka would otherwise log each reconnect attempt.
                "error_cb": self._on_error,
                "logger": logger,
                "log_level": 2,
            }
        )

    def _on_error(self, error: KafkaError) -> None:
        self._errors.append(error.str())

    def send(self, batch: Batch, deadline: float) -> None:
        with self._lock:
            self._send(batch, deadline)

    def _send(self, batch: Batch, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise Undelivered("the run's time was up before the batch was sent")
        if self._producer is None:
            self._producer = self._make()
        producer, self._errors = self._producer, []
        failed: list[str] = []
        confirmed: list[int] = []

        def delivered(error: KafkaError | None, _message: Any) -> None:
            if error is None:
                confirmed.append(1)
            else:
                failed.append(error.str())

        headers: list[tuple[str, str | bytes | None]] = [
            ("thinkwatch-batch", batch.batch_id.encode())
        ]
        try:
            for record in batch.records:
                producer.produce(
                    self.topic,
                    key=batch.family.encode(),
                    value=dumps(record),
                    headers=headers,
                    on_delivery=delivered,
                )
                producer.poll(0)
            waiting = producer.flush(max(deadline - time.monotonic(), 0.0))
        except (KafkaException, BufferError) as exc:
            self._discard()
            raise Undelivered(f"Kafka {self.servers}: {exc}") from None
        if failed or waiting:
            said = failed[0] if failed else (self._errors[-1] if self._errors else "no answer")
            unconfirmed = len(batch.records) - len(confirmed)
            self._discard()
            raise Undelivered(
                f"Kafka {self.servers} topic {self.topic}: {unconfirmed} of "
                f"{len(batch.records)} records not confirmed ({said})"
            )

    def _discard(self) -> None:
        """Drop what is still queued, and the producer with it."""
        producer, self._producer = self._producer, None
        if producer is not None:
            producer.purge()
            producer.flush(0)

    def close(self) -> None:
        with self._lock:
            self._discard()
