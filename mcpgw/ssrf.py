"""Where the gateway may connect: upstream MCP servers and OAuth endpoints are URLs an
admin (or a server's metadata) gives, so each is checked at registration and again when
connecting. Private, loopback, link-local, shared and metadata addresses are refused unless
an address range is allow-listed (THINKWATCH_MCP_ALLOWED_NETWORKS)."""

import asyncio
import ipaddress
import socket
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Cloud metadata services, refused even when their range is otherwise allowed.
_METADATA = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "169.254.170.2", "fd00:ec2::254")
)


class Refused(Exception):
    """The URL points somewhere the gateway does not connect to."""


@lru_cache(maxsize=8)
def _allowed(spec: tuple[str, ...]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in spec)


def allowed_networks() -> tuple[IPNetwork, ...]:
    return _allowed(tuple(settings.MCP_ALLOWED_NETWORKS))


def check_address(address: IPAddress) -> None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in _METADATA:
        raise Refused(f"{address} is a cloud metadata address.")
    if any(address in network for network in allowed_networks()):
        return
    if not address.is_global or address.is_multicast:
        raise Refused(
            f"{address} is a private, loopback, link-local or reserved address; "
            "allow-list its range in THINKWATCH_MCP_ALLOWED_NETWORKS to use it."
        )


def _host_of(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("Only http:// and https:// URLs are allowed.")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.hostname, port


def _resolve(host: str, port: int) -> list[IPAddress]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise Refused(f"Cannot resolve {host}: {exc.strerror or exc}.") from exc
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_url(url: str) -> None:
    """Raise Refused unless every address the URL's host resolves to is acceptable."""
    host, port = _host_of(url)
    for address in _resolve(host, port):
        check_address(address)


async def acheck_url(url: str) -> None:
    host, _port = _host_of(url)
    try:
        check_address(ipaddress.ip_address(host))
        return
    except ValueError:
        pass
    await asyncio.to_thread(check_url, url)
