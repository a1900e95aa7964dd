"""The gateway's log writer: one record per request, written in batches off the loop."""

from typing import Any

from accounts.logic import persist_key_use
from audit.writer import LogWriter, write_gateway_logs

writer = LogWriter("gateway", write_gateway_logs, after_write=persist_key_use)


def submit(record: dict[str, Any]) -> None:
    writer.submit(record)
