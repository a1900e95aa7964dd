"""Bodies above the inline cap go to a real S3 endpoint (moto's server): the record keeps
the object's name and SHA-256 under the chain, reading fetches and checks the object, and
an object altered or deleted afterwards is reported, not served."""

import hashlib
from datetime import UTC, datetime
from io import StringIO
from typing import Any

import openai
import orjson
import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from audit import bodies
from audit.models import GatewayLog
from tests.bodies.conftest import gateway_logged
from tests.factories import make_key

LONG = "word " * 400 + "mail bob@example.com"


def api(user: User) -> Client:
    return Client(HTTP_AUTHORIZATION=f"Bearer {make_key(user, surfaces=['console'])[1]}")


def offloaded(client: openai.OpenAI) -> GatewayLog:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": LONG}]
    )
    (record,) = gateway_logged()
    return record


def stored(s3: Any, bucket: str, record: GatewayLog) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=record.body_ref)["Body"].read()
    return data


def test_it_offloads_bodies_above_the_inline_cap_with_their_hash(
    bucket: str, small_cap: None, client: openai.OpenAI, s3: Any
) -> None:
    record = offloaded(client)

    day = f"{record.created_at:%Y/%m/%d}"
    assert record.body_ref == f"gateway/{day}/{record.uid}.json"
    data = stored(s3, bucket, record)
    assert record.body_sha256 == hashlib.sha256(data).hexdigest()
    assert (record.request_body, record.response_body) == (None, None)
    body = orjson.loads(data)
    assert body["request_body"].endswith('mail [EMAIL]"}]}')
    assert b"bob@example.com" not in data
    assert record.body_redactions == {"email": 1} and record.body_truncated is False


def test_the_chain_covers_the_offloaded_bodys_reference_and_hash(
    bucket: str, small_cap: None, client: openai.OpenAI
) -> None:
    record = offloaded(client)
    out = StringIO()
    call_command("audit_verify", stdout=out)
    assert "gateway: ok, 1 records" in out.getvalue()

    GatewayLog.objects.filter(pk=record.pk).update(body_sha256="0" * 64)
    with pytest.raises(CommandError, match="broken"):
        call_command("audit_verify", stdout=StringIO())


def test_it_keeps_small_bodies_inline_when_storage_is_configured(
    bucket: str, small_cap: None, client: openai.OpenAI, s3: Any
) -> None:
    client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
    )

    (record,) = gateway_logged()
    assert record.body_ref is None and '"content":"hi"' in record.request_body.replace(" ", "")
    assert s3.list_objects_v2(Bucket=bucket)["KeyCount"] == 0


def test_offloading_twice_writes_the_same_object(bucket: str, s3: Any, small_cap: None) -> None:
    def record() -> dict[str, Any]:
        return {
            "uid": "abc123",
            "created_at": datetime(2026, 12, 1, 10, tzinfo=UTC),
            "request_body": "x" * 3000,
            "response_body": "{}",
            "body_redactions": {},
        }

    first, second = record(), record()
    bodies.offload("gateway", [first])
    bodies.offload("gateway", [second])
    bodies.offload("gateway", [second])  # a retried batch: already offloaded, left alone

    listed = s3.list_objects_v2(Bucket=bucket)
    assert [o["Key"] for o in listed["Contents"]] == ["gateway/2026/12/01/abc123.json"]
    assert first["body_sha256"] == second["body_sha256"]
    assert first["body_ref"] == second["body_ref"] == "gateway/2026/12/01/abc123.json"


def test_the_api_returns_an_offloaded_body_checked_against_its_hash(
    bucket: str, small_cap: None, client: openai.OpenAI, alice: User
) -> None:
    record = offloaded(client)

    response = api(alice).get(f"/api/logs/gateway/{record.pk}/body")

    assert response.status_code == 200, response.content
    found = response.json()
    assert (found["stored"], found["sha256"]) == ("offloaded", record.body_sha256)
    assert found["request_body"].endswith('mail [EMAIL]"}]}')
    assert found["response_body"].startswith('{"id":')


def test_the_api_reports_an_altered_object_as_tampered(
    bucket: str, small_cap: None, client: openai.OpenAI, alice: User, s3: Any
) -> None:
    record = offloaded(client)
    altered = stored(s3, bucket, record).replace(b"[EMAIL]", b"[email]")
    s3.put_object(Bucket=bucket, Key=record.body_ref, Body=altered)

    response = api(alice).get(f"/api/logs/gateway/{record.pk}/body")

    assert response.status_code == 409
    assert "altered" in response.json()["detail"]
    assert "word word" not in response.content.decode()


def test_the_api_reports_a_deleted_object(
    bucket: str, small_cap: None, client: openai.OpenAI, alice: User, s3: Any
) -> None:
    record = offloaded(client)
    s3.delete_object(Bucket=bucket, Key=record.body_ref)

    response = api(alice).get(f"/api/logs/gateway/{record.pk}/body")

    assert response.status_code == 409
    assert "deleted" in response.json()["detail"]


def test_the_console_page_shows_a_tampered_body_as_tampered(
    bucket: str, small_cap: None, client: openai.OpenAI, alice: User, s3: Any
) -> None:
    record = offloaded(client)
    s3.put_object(Bucket=bucket, Key=record.body_ref, Body=b'{"request_body": "forged"}')
    console = Client()
    console.force_login(alice)

    response = console.get(f"/admin/logs/gateway/{record.pk}/body/")

    assert response.status_code == 409
    assert "Tampered" in response.content.decode()
    assert "forged" not in response.content.decode()
