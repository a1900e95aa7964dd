"""Access records: one per HTTP request on either port, through the console's ASGI app as
daphne serves it."""

from typing import Any

import httpx
import pytest
from django.conf import settings
from django.test import Client

from audit import pipeline
from audit.models import AccessLog
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def stored() -> list[AccessLog]:
    assert pipeline.pipeline.flush(10)
    return list(AccessLog.objects.order_by("seq"))


async def get(path: str, cookies: dict[str, str] | None = None, **kwargs: Any) -> httpx.Response:
    from thinkwatch.asgi import console

    transport = httpx.ASGITransport(app=console, client=("198.51.100.7", 5000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", cookies=cookies
    ) as client:
        return await client.get(path, **kwargs)


async def test_a_console_request_is_recorded_with_its_user_and_without_its_query() -> None:
    from asgiref.sync import sync_to_async

    def signed_in() -> tuple[str, int]:
        user = UserFactory(username="carol@example.com", is_staff=True, is_superuser=True)
        browser = Client()
        browser.force_login(user)
        return str(browser.cookies[settings.SESSION_COOKIE_NAME].value), user.pk

    session, user_id = await sync_to_async(signed_in)()
    response = await get(
        "/admin/?token=s3cret",
        cookies={settings.SESSION_COOKIE_NAME: session},
        headers={"User-Agent": "probe/1"},
    )
    assert response.status_code == 200
    anonymous = await get("/admin/")
    assert anonymous.status_code == 302

    records = await sync_to_async(stored)()
    assert [(r.port, r.method, r.path, r.status_code) for r in records] == [
        ("console", "GET", "/admin/", 200),
        ("console", "GET", "/admin/", 302),
    ]
    assert records[0].user_id == user_id
    assert records[1].user_id is None
    assert records[0].client_ip == "198.51.100.7"
    assert records[0].user_agent == "probe/1"
    everything = await sync_to_async(lambda: str(list(AccessLog.objects.values())))()
    assert "s3cret" not in everything
