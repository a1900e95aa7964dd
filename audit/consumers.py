"""The dashboard's websocket, `/ws/dashboard?ticket=...` on the console port.

The socket is accepted first and then closed with a code a page can read: 4401 when the
ticket is missing, unknown, expired or already used (mint a new one), 4403 when the
ticket's user may no longer use the console. An admitted socket receives the numbers of
the records its user may see, every tick; it sends nothing.
"""

from typing import Any
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model
from django.db.models import Q

from accounts.access import Rights, log_filter
from audit import live, tickets

UNAUTHENTICATED = 4401
FORBIDDEN = 4403


@database_sync_to_async
def _admit(ticket: str) -> Q | int:
    """The scope the ticket's user may watch, or the close code refusing the socket."""
    user_id = tickets.redeem(ticket)
    if user_id is None:
        return UNAUTHENTICATED
    user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    if user is None or not Rights.of(user).console:
        return FORBIDDEN
    return log_filter(user)


class DashboardConsumer(AsyncJsonWebsocketConsumer):
    watching: Q | None = None

    async def connect(self) -> None:
        await self.accept()
        query = parse_qs(self.scope["query_string"].decode("latin-1"))
        admitted = await _admit(query.get("ticket", [""])[0])
        if isinstance(admitted, int):
            await self.close(code=admitted)
            return
        self.watching = admitted
        await live.hub.join(admitted, self.send_json)

    async def disconnect(self, code: int) -> None:
        if self.watching is not None:
            live.hub.leave(self.watching, self.send_json)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The dashboard only listens."""
