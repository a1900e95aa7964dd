"""The probes of the Helm chart, compose and the image, sent to the real application the way
the kubelet sends them: to the pod's address, with the Host header the probe names."""

import httpx
import pytest
from django.test import Client, override_settings

from providers.models import Provider
from tests.conftest import LiveServer

POD_ADDRESS = "10.1.2.3"
# What the chart's ConfigMap sets with config.allowedHosts = [console.example.com].
CHART_ALLOWED_HOSTS = ["localhost", "console.example.com"]


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_the_console_answers_a_probe_naming_localhost(openai_provider: Provider, path: str) -> None:
    with override_settings(ALLOWED_HOSTS=CHART_ALLOWED_HOSTS):
        response = Client().get(path, HTTP_HOST="localhost:3001")

    assert response.status_code == 200


def test_the_console_refuses_a_probe_naming_only_the_pod_address(db: None) -> None:
    """Why the chart's console probes send Host: localhost."""
    with override_settings(ALLOWED_HOSTS=CHART_ALLOWED_HOSTS):
        response = Client().get("/health/live", HTTP_HOST=f"{POD_ADDRESS}:3001")

    assert response.status_code == 400


@pytest.mark.parametrize("path", ["/health/live", "/health/ready"])
def test_the_gateway_answers_a_probe_sent_to_the_pod_address(
    gateway: LiveServer, openai_provider: Provider, path: str
) -> None:
    response = httpx.get(f"{gateway.url}{path}", headers={"Host": f"{POD_ADDRESS}:3000"})

    assert response.status_code == 200
