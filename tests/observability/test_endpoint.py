"""GET /metrics on the gateway port: absent without METRICS_BEARER_TOKEN, and only for
callers presenting it."""

import httpx
import pytest
from django.test import Client, override_settings
from prometheus_client import CONTENT_TYPE_LATEST

from tests.conftest import LiveServer
from tests.observability.conftest import TOKEN


def test_it_is_not_found_without_the_setting(gateway: LiveServer) -> None:
    with override_settings(METRICS_BEARER_TOKEN=""):
        response = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": "Bearer x"})
        unknown = httpx.get(f"{gateway.url}/nothing-here")

    assert response.status_code == 404
    assert response.json()["error"]["code"] == unknown.json()["error"]["code"] == "not_found"


@pytest.mark.usefixtures("metrics_token")
@pytest.mark.parametrize(
    "authorization",
    [None, f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN, "Bearer"],
)
def test_it_refuses_a_caller_without_the_token(
    gateway: LiveServer, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}

    response = httpx.get(f"{gateway.url}/metrics", headers=headers)

    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert TOKEN not in response.text
    assert "thinkwatch_requests" not in response.text


@pytest.mark.usefixtures("metrics_token")
def test_it_serves_the_exposition_format_with_the_token(gateway: LiveServer) -> None:
    response = httpx.get(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert "# TYPE thinkwatch_requests_total counter" in response.text
    assert "# TYPE thinkwatch_time_to_first_token_seconds histogram" in response.text


@pytest.mark.usefixtures("metrics_token")
def test_it_takes_only_get(gateway: LiveServer) -> None:
    response = httpx.post(f"{gateway.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})

    assert response.status_code == 405
    assert response.headers["Allow"] == "GET"


@pytest.mark.django_db
def test_it_is_not_served_on_the_console() -> None:
    with override_settings(METRICS_BEARER_TOKEN=TOKEN):
        response = Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}")

    assert response.status_code == 404
