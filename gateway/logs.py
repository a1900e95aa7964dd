"""The gateway's log writer: one record per request, through the lossless audit pipeline
(audit/pipeline.py)."""

from typing import Any

from audit import pipeline
from thinkwatch import metrics

writer = pipeline.FamilyWriter("gateway")


def submit(record: dict[str, Any]) -> None:
    metrics.observe_gateway(record)
    writer.submit(record)
