"""What the credential tests share besides fixtures (those are in oauth_fixture.py): the
clients of the authorization server and of the metadata server, and what a user's browser
does to connect an account."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.test import Client

from mcpgw.models import McpServer

CLIENT_ID = "thinkwatch-gateway"
CLIENT_SECRET = "tw-oauth-client-secret-do-not-show"
MCP_URL = "https://tracker.example.com/mcp"


class OAuthServer:
    """The running authorization server: `issuer`, and the calls its token endpoint got."""

    def __init__(self, issuer: str) -> None:
        self.issuer = issuer
        self.token_endpoint = f"{issuer}/token"

    def calls(self, grant_type: str | None = None) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.issuer}/_calls", timeout=5)
        response.raise_for_status()
        return [c for c in response.json() if grant_type in (None, c["grant_type"])]

    def reset(self) -> None:
        httpx.delete(f"{self.issuer}/_calls", timeout=5).raise_for_status()


class MetadataServer:
    """Serves `documents` (path -> JSON) on a loopback port; 404 for anything else."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.requested: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requested.append(self.path)
                document = outer.documents.get(self.path)
                body = json.dumps(document).encode()
                self.send_response(404 if document is None else 200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> "MetadataServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def signed_in(user: User, **headers: str) -> Client:
    """A browser signed in to the console as `user`."""
    browser = Client(**headers)
    browser.force_login(user)
    return browser


def through_the_authorization_server(browser: Client, authorize_url: str) -> HttpResponse:
    """What the browser does once sent to the authorization server: it follows that
    server's redirect back to the console's callback."""
    back = httpx.get(authorize_url, follow_redirects=False, timeout=10)
    assert back.status_code == 302, back.text
    callback = urlsplit(back.headers["location"])
    return browser.get(f"{callback.path}?{callback.query}")


def start(browser: Client, server: McpServer) -> str:
    """The authorization URL the console's connect page sends the browser to."""
    response = browser.get(f"/mcp/connect/{server.pk}/")
    assert response.status_code == 302, response.content
    return str(response["Location"])


def connect(browser: Client, server: McpServer) -> HttpResponse:
    """Connect the browser's user to the server, from the console's connect page."""
    return through_the_authorization_server(browser, start(browser, server))
