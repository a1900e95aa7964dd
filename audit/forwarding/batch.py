"""A batch: consecutive records of one family, in their forwarded form, with the identity
every attempt to deliver it carries (the webhook's Idempotency-Key, a Kafka header)."""

import secrets
from dataclasses import dataclass, field
from typing import Any, Protocol

Record = dict[str, Any]


def new_batch_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class Batch:
    family: str
    records: list[Record]
    batch_id: str = field(default_factory=new_batch_id)

    @property
    def first_seq(self) -> int:
        return int(self.records[0]["seq"])

    @property
    def last_seq(self) -> int:
        return int(self.records[-1]["seq"])


class Sender(Protocol):
    def send(self, batch: Batch, deadline: float) -> None:
        """Deliver the whole batch by `deadline` (time.monotonic()), or raise
        audit.forwarding.retry.Undelivered."""

    def close(self) -> None:
        """Let go of any connection held."""
