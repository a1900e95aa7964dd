"""Real receivers on loopback for the forwarding tests: a syslog UDP listener, a syslog
TCP listener that parses RFC 6587 octet counting, an HTTP server that answers from a
script, and a parser of RFC 5424 messages written from the RFC (not from the sender)."""

import contextlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# RFC 5424 §6: HEADER SP STRUCTURED-DATA [SP MSG]
_SYSLOG = re.compile(
    rb"^<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) (?P<timestamp>\S+) (?P<hostname>\S{1,255}) "
    rb"(?P<app>\S{1,48}) (?P<procid>\S{1,128}) (?P<msgid>\S{1,32}) "
    rb"(?P<sd>-|(?:\[(?:[^\]\\]|\\.)*\])+)(?: (?P<msg>.*))?$",
    re.DOTALL,
)
_SD_ELEMENT = re.compile(rb"\[(?P<id>[^ \]]+)(?P<params>(?: [^=]+=\"(?:[^\"\\]|\\.)*\")*)\]")
_SD_PARAM = re.compile(rb' ([^=]+)="((?:[^"\\]|\\.)*)"')
BOM = b"\xef\xbb\xbf"


@dataclass
class SyslogMessage:
    facility: int
    severity: int
    version: int
    timestamp: datetime
    hostname: str
    app: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]]
    record: dict[str, Any]
    raw: bytes


def parse_syslog(raw: bytes) -> SyslogMessage:
    match = _SYSLOG.match(raw)
    assert match, f"not an RFC 5424 message: {raw[:200]!r}"
    pri = int(match["pri"])
    sd: dict[str, dict[str, str]] = {}
    for element in _SD_ELEMENT.finditer(match["sd"]):
        sd[element["id"].decode()] = {
            k.decode(): v.decode() for k, v in _SD_PARAM.findall(element["params"])
        }
    msg = match["msg"] or b""
    assert msg.startswith(BOM), "a UTF-8 MSG starts with the BOM (RFC 5424 §6.4)"
    return SyslogMessage(
        facility=pri // 8,
        severity=pri % 8,
        version=int(match["version"]),
        timestamp=datetime.fromisoformat(match["timestamp"].decode()),
        hostname=match["hostname"].decode(),
        app=match["app"].decode(),
        procid=match["procid"].decode(),
        msgid=match["msgid"].decode(),
        sd=sd,
        record=json.loads(msg[len(BOM) :]),
        raw=raw,
    )


def wait_until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


class UdpReceiver:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.datagrams: list[bytes] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _run(self) -> None:
        while True:
            try:
                data, _ = self.sock.recvfrom(65535)
            except OSError:
                return
            self.datagrams.append(data)

    def messages(self, count: int) -> list[SyslogMessage]:
        wait_until(lambda: len(self.datagrams) >= count)
        return [parse_syslog(d) for d in self.datagrams]

    def close(self) -> None:
        self.sock.close()


class TcpReceiver:
    """Accepts connections and reads octet-counted frames (MSG-LEN SP MSG) from each."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frames: list[bytes] = []
        self.connections: list[socket.socket] = []
        self.errors: list[str] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        buffer = b""
        try:
            while chunk := conn.recv(65536):
                buffer += chunk
                while b" " in buffer:
                    length, _, rest = buffer.partition(b" ")
                    if not length.isdigit():
                        self.errors.append(f"not octet counting: {buffer[:40]!r}")
                        return
                    if len(rest) < int(length):
                        break
                    self.frames.append(rest[: int(length)])
                    buffer = rest[int(length) :]
        except OSError:
            return

    def messages(self, count: int) -> list[SyslogMessage]:
        wait_until(lambda: len(self.frames) >= count)
        assert not self.errors, self.errors
        return [parse_syslog(f) for f in self.frames]

    def drop_connections(self) -> None:
        """The receiver restarts: every open connection is closed."""
        for conn in self.connections:
            # shutdown() first: close() alone would not wake the thread blocked in recv(),
            # and the connection would stay open.
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def close(self) -> None:
        self.drop_connections()
        self.server.close()


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b'{"ok": true}'
    delay: float = 0.0


@dataclass
class Received:
    at: float  # time.monotonic()
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class WebhookReceiver:
    """An HTTP server in a thread: answers each POST with the next scripted Answer (200
    once the script is used up) and keeps what it received."""

    def __init__(self) -> None:
        self.script: list[Answer] = []
        self.received: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                receiver.received.append(
                    Received(
                        time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body
                    )
                )
                answer = receiver.script.pop(0) if receiver.script else Answer()
                time.sleep(answer.delay)
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                with contextlib.suppress(ConnectionError):  # the sender gave up waiting
                    self.wfile.write(answer.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/siem/events"

    def fail(self, *answers: Answer) -> None:
        self.script.extend(answers)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
