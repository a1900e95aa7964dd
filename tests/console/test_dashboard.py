"""The live dashboard: its page, its one-shot tickets, and the numbers its websocket pushes."""

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from decimal import Decimal
from typing import Any

import openai
import pytest
import time_machine
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from accounts.models import RoleAssignment
from audit import live, tickets
from gateway import logs
from tests.console.conftest import GatewayLogFactory, page_ticket, signed_in

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = (b"origin", b"http://localhost:3001")
Snapshot = dict[str, Any]


@pytest.fixture(autouse=True)
async def fast_ticks(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[None]:
    monkeypatch.setattr(live, "TICK_SECONDS", 0.05)
    yield
    for feed in live.hub.feeds.values():  # a failed test may leave sockets open
        feed.task.cancel()
    live.hub.feeds.clear()


def socket(query: str, origin: tuple[bytes, bytes] = ORIGIN) -> WebsocketCommunicator:
    from thinkwatch.asgi import console

    return WebsocketCommunicator(console, f"/ws/dashboard{query}", headers=[origin])


async def close_code(communicator: WebsocketCommunicator) -> int:
    """The code the server closes an accepted socket with."""
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    message = await communicator.receive_output(timeout=5)
    assert message["type"] == "websocket.close"
    return int(message["code"])


async def watch(ticket: str) -> WebsocketCommunicator:
    communicator = socket(f"?ticket={ticket}")
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


async def snapshot_where(
    communicator: WebsocketCommunicator, wanted: Callable[[Snapshot], bool]
) -> Snapshot:
    """The first pushed snapshot that shows what the test is waiting for."""
    seen: Snapshot = {}
    for _ in range(100):
        seen = await communicator.receive_json_from(timeout=5)
        if wanted(seen):
            return seen
    raise AssertionError(f"no snapshot matched; the last was {seen}")


log = sync_to_async(GatewayLogFactory)
ticket_of = sync_to_async(lambda user: page_ticket(signed_in(user)))


async def test_it_pushes_numbers_to_a_socket_with_the_pages_ticket(alice: User) -> None:
    communicator = await watch(await ticket_of(alice))

    first = await communicator.receive_json_from(timeout=5)

    assert first["requests"] == 0
    await communicator.disconnect()


async def test_it_refuses_a_ticket_used_twice(alice: User) -> None:
    ticket = await ticket_of(alice)
    first = await watch(ticket)

    assert await close_code(socket(f"?ticket={ticket}")) == 4401
    await first.disconnect()


async def test_it_refuses_an_expired_ticket(alice: User) -> None:
    with time_machine.travel(timezone.now() - timedelta(seconds=tickets.TTL_SECONDS + 1)):
        ticket = await sync_to_async(tickets.mint)(alice)

    assert await close_code(socket(f"?ticket={ticket}")) == 4401


@pytest.mark.parametrize("query", ["", "?ticket=", "?ticket=made-up"])
async def test_it_refuses_a_socket_without_a_valid_ticket(db: None, query: str) -> None:
    assert await close_code(socket(query)) == 4401


async def test_it_refuses_a_ticket_whose_user_lost_the_console(bob: User) -> None:
    ticket = await ticket_of(bob)
    await sync_to_async(lambda: RoleAssignment.objects.filter(user=bob).delete())()

    assert await close_code(socket(f"?ticket={ticket}")) == 4403


async def test_it_refuses_a_socket_opened_from_another_site(alice: User) -> None:
    ticket = await ticket_of(alice)
    communicator = socket(f"?ticket={ticket}", origin=(b"origin", b"https://evil.example"))

    connected, _ = await communicator.connect(timeout=5)

    assert not connected


async def test_it_mints_a_fresh_ticket_for_a_page_that_reconnects(alice: User) -> None:
    response = await sync_to_async(lambda: signed_in(alice).post("/admin/dashboard/ticket"))()
    communicator = await watch(response.json()["ticket"])

    assert "requests" in await communicator.receive_json_from(timeout=5)
    await communicator.disconnect()


def test_it_mints_no_ticket_for_a_visitor_who_is_not_signed_in(db: None) -> None:
    response = Client().post("/admin/dashboard/ticket")

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


async def test_it_pushes_records_written_while_the_page_is_open(alice: User, bob: User) -> None:
    communicator = await watch(await ticket_of(alice))
    await communicator.receive_json_from(timeout=5)
    for latency in (100, 200, 300, 400):
        await log(user_id=bob.pk, latency_ms=latency, input_tokens=30, output_tokens=10)
    await log(user_id=bob.pk, model="claude-x", status_code=500, latency_ms=1000, cost_usd=1)

    snapshot = await snapshot_where(communicator, lambda s: s["requests"] == 5)

    assert snapshot["errors"] == 1
    assert snapshot["error_rate"] == 0.2
    assert snapshot["tokens"] == 4 * 40 + 15
    assert Decimal(str(snapshot["cost_usd"])) == Decimal("1.04")
    assert snapshot["latency_ms"] == {"p50": 300.0, "p95": 1000.0}
    assert snapshot["series"][-1]["requests"] == 5
    assert [m["name"] for m in snapshot["top_models"]["by_requests"]] == ["gpt-4o", "claude-x"]
    assert [m["name"] for m in snapshot["top_models"]["by_cost"]] == ["claude-x", "gpt-4o"]
    assert snapshot["top_users"]["by_requests"] == [
        {"name": "bob@example.com", "requests": 5, "cost_usd": 1.04}
    ]
    await communicator.disconnect()


async def test_it_shows_a_developer_only_their_own_records(
    alice: User, bob: User, carol: User
) -> None:
    communicator = await watch(await ticket_of(bob))
    await log(user_id=carol.pk, model="carols-model")
    await log(user_id=carol.pk, model="carols-model")
    await log(user_id=bob.pk, model="bobs-model")

    snapshot = await snapshot_where(communicator, lambda s: s["requests"] > 0)

    assert snapshot["requests"] == 1
    assert [m["name"] for m in snapshot["top_models"]["by_requests"]] == ["bobs-model"]
    assert [u["name"] for u in snapshot["top_users"]["by_requests"]] == ["bob@example.com"]
    await communicator.disconnect()


async def test_it_computes_once_per_scope_for_all_the_sockets_watching_it(
    alice: User, bob: User
) -> None:
    sockets = [await watch(await ticket_of(user)) for user in (alice, alice, bob)]
    for communicator in sockets:
        await communicator.receive_json_from(timeout=5)

    assert len(live.hub.feeds) == 2
    for communicator in sockets:
        await communicator.disconnect()
    assert live.hub.feeds == {}


async def test_it_counts_requests_the_gateway_answered(
    alice: User, client: openai.OpenAI, openai_provider: Any
) -> None:
    from tests.factories import AIModelFactory, RouteFactory

    await sync_to_async(RouteFactory)(
        model=await sync_to_async(AIModelFactory)(model_id="gpt-4o-mini"), provider=openai_provider
    )
    communicator = await watch(await ticket_of(alice))

    await asyncio.to_thread(
        client.chat.completions.create,
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Hello"}],
    )
    # Delivered to the store (in production mode through Redis, as Celery would).
    await asyncio.to_thread(logs.writer.flush, 10)

    snapshot = await snapshot_where(communicator, lambda s: s["requests"] == 1)
    assert snapshot["top_users"]["by_requests"][0]["name"] == "bob@example.com"
    await communicator.disconnect()


def test_it_links_the_dashboard_from_the_top_of_the_console_home(alice: User) -> None:
    page = signed_in(alice).get("/admin/").content.decode()

    assert '<a class="button default" href="/admin/dashboard/">Live dashboard</a>' in page
