"""Readiness covers the bucket bodies are offloaded to, when one is configured."""

from typing import Any

import httpx
import pytest

from tests.bodies.conftest import S3_SECRET
from tests.conftest import LiveServer

pytestmark = pytest.mark.django_db(transaction=True)


def test_readiness_reports_the_body_bucket(
    gateway: LiveServer, openai_provider: Any, bucket: str
) -> None:
    answer = httpx.get(f"{gateway.url}/health/ready").json()
    assert answer["status"] == "ok"
    statuses = {d["name"]: d["status"] for d in answer["dependencies"]}
    assert statuses["body_storage"] == "ok"
    assert set(statuses.values()) == {"ok"}


def test_a_missing_bucket_makes_the_gateway_not_ready(
    gateway: LiveServer, openai_provider: Any, bucket: str, settings: Any
) -> None:
    settings.BODY_S3_BUCKET = "no-such-bucket-here"
    response = httpx.get(f"{gateway.url}/health/ready")
    assert response.status_code == 503
    body = response.text
    assert "body_storage unreachable: ClientError" in body
    assert S3_SECRET not in body
