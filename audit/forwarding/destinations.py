"""What a forwarder's destination may be, checked when it is saved so that a typo is an
error on the form, not a failure every few seconds in the worker's log."""

import ipaddress
import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError

from audit.chain import FAMILIES

if TYPE_CHECKING:
    from audit.models import Forwarder

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)
# Kafka's own rule for topic names.
_TOPIC = re.compile(r"^[A-Za-z0-9._-]{1,249}$")


def host_port(value: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port`: the host (without brackets) and the port. Raises
    ValueError with what is wrong."""
    value = value.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
        if not sep:
            raise ValueError(f"{value!r} is not [IPv6 address]:port")
        ipaddress.IPv6Address(host)  # ValueError when it is not one
    else:
        host, sep, port = value.rpartition(":")
        if not sep or not host:
            raise ValueError(f"{value!r} has no port: write host:port")
        if ":" in host:
            raise ValueError(f"{value!r}: write an IPv6 address in brackets, [::1]:514")
        if not _HOSTNAME.match(host):
            raise ValueError(f"{host!r} is not a host name or address")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{port!r} is not a port (1-65535)")
    return host, int(port)


def _check_url(url: str) -> str | None:
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        return f"Not a URL: {exc}."
    if parts.scheme not in ("https", "http"):
        return "Write an https:// (or http://) URL."
    if not parts.hostname:
        return "The URL has no host."
    if parts.username is not None or parts.password is not None:
        return (
            "Put no credentials in the URL: requests are signed with the secret below "
            "(X-ThinkWatch-Signature)."
        )
    if parts.fragment:
        return "A URL sent to a server has no #fragment."
    if port == 0:
        return "The URL's port is not valid."
    return None


def check(forwarder: "Forwarder") -> None:
    """Raise ValidationError naming each field that is wrong, and how to put it right."""
    errors: dict[str, str] = {}
    families = forwarder.families
    if not isinstance(families, list) or not families:
        errors["families"] = "Choose at least one log family to send."
    elif unknown := sorted({str(f) for f in families} - set(FAMILIES)):
        errors["families"] = (
            f"Unknown log families: {', '.join(unknown)}. Known: {', '.join(FAMILIES)}."
        )
    destination = (forwarder.destination or "").strip()
    kind = forwarder.type
    if kind in ("syslog_udp", "syslog_tcp"):
        try:
            host_port(destination)
        except ValueError as exc:
            errors["destination"] = f"Write the syslog receiver as host:port ({exc})."
    elif kind == "webhook":
        if problem := _check_url(destination):
            errors["destination"] = problem
        if not forwarder.has_secret:
            errors["secret"] = "A webhook needs a secret: requests are signed with it."  # noqa: S105
    elif kind == "kafka":
        servers = [s for s in destination.split(",") if s.strip()]
        if not servers:
            errors["destination"] = "Write the bootstrap servers as host:port[,host:port...]."
        for server in servers:
            try:
                host_port(server)
            except ValueError as exc:
                errors["destination"] = f"Bootstrap servers are host:port[,host:port...] ({exc})."
                break
        if not _TOPIC.match(forwarder.topic or ""):
            errors["topic"] = "A Kafka topic name: 1-249 of A-Z a-z 0-9 . _ -"
    if errors:
        raise ValidationError(errors)
