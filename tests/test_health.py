import httpx
import pytest
from django.test import Client, override_settings

from providers.models import Provider
from tests.conftest import LiveServer, free_port
from tests.factories import ProviderFactory


def test_it_is_live_on_the_gateway_port(gateway: LiveServer) -> None:
    assert httpx.get(f"{gateway.url}/health/live").json() == {"status": "ok"}


def test_it_is_ready_with_a_provider(gateway: LiveServer, openai_provider: Provider) -> None:
    response = httpx.get(f"{gateway.url}/health/ready")

    assert response.status_code == 200


def test_it_is_not_ready_without_an_enabled_provider(gateway: LiveServer) -> None:
    ProviderFactory(enabled=False)

    response = httpx.get(f"{gateway.url}/health/ready")

    assert response.status_code == 503
    assert response.json()["problems"] == ["no provider is enabled"]


@pytest.mark.django_db
def test_it_answers_health_on_the_console_port() -> None:
    ProviderFactory()

    assert Client().get("/health/live").status_code == 200
    assert Client().get("/health/ready").status_code == 200


@pytest.mark.django_db
def test_it_is_not_ready_when_redis_is_unreachable() -> None:
    ProviderFactory()

    with override_settings(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"):
        response = Client().get("/health/ready")

    assert response.status_code == 503
    assert response.json()["problems"][0].startswith("redis unreachable")


@pytest.mark.parametrize("path", ["/api/keys", "/admin/login/", "/api/openapi.json"])
def test_it_serves_no_console_route_on_the_gateway(gateway: LiveServer, path: str) -> None:
    assert httpx.get(f"{gateway.url}{path}").status_code == 404


@pytest.mark.django_db
def test_it_serves_no_gateway_route_on_the_console() -> None:
    assert Client().post("/v1/chat/completions", {}).status_code == 404
