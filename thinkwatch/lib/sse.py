"""Server-sent events, split without rebuilding them.

Upstream bytes arrive in arbitrary pieces; `EventSplitter` hands back whole events, each
exactly as received (terminator included), so a relay can forward them byte for byte.
"""

import re

_BOUNDARY = re.compile(rb"\r\n\r\n|\n\n|\r\r")
_DATA_LINE = re.compile(rb"^data: ?(.*?)\r?$", re.MULTILINE)


class EventSplitter:
    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" not in buffer:  # the usual case: bytes.split runs at C speed
            parts = buffer.split(b"\n\n")
            self._buffer = parts.pop()
            return [part + b"\n\n" for part in parts]
        events = []
        start = 0
        for match in _BOUNDARY.finditer(buffer):
            events.append(buffer[start : match.end()])
            start = match.end()
        self._buffer = buffer[start:]
        return events

    def rest(self) -> bytes:
        """Bytes after the last complete event (a stream cut short)."""
        rest, self._buffer = self._buffer, b""
        return rest


def data_of(event: bytes) -> bytes:
    """The event's data field (multi-line data joined by newlines, as the spec says)."""
    lines = _DATA_LINE.findall(event)
    return lines[0] if len(lines) == 1 else b"\n".join(lines)


def encode(data: bytes, event: str | None = None) -> bytes:
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + data + b"\n\n"
