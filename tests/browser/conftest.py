"""Real-browser tests: Playwright's sync API driving Debian's Chromium (/usr/bin/chromium,
`make chromium` installs it; Playwright's own browsers are never downloaded) against the
console and gateway as `make run` starts them.

How the processes get their data, and why it is done this way:

- The console is `python -m thinkwatch.run --only console`, the supervisor `make run` uses:
  it migrates, collects static files and runs daphne serving `thinkwatch.asgi:console`, on
  a free loopback port. Its database is a SQLite file in a temporary directory that the
  test process never opens through Django (`traffic` only reads it, read-only, to wait for
  the gateway's log records), so these tests need no `db` or `transactional_db`, and one
  console serves the whole session.
- Its data is made the way an operator makes it: once the console runs, `manage.py setup
  --no-input` creates Alice (the super admin), names the site, adds an OpenAI provider
  whose endpoint is the fake upstream and issues the key `traffic` sends requests with.
  Everything else goes through the pages under test, so tests give what they create unique
  names and never depend on each other's order. (A test that needs a console nobody has
  set up yet, e.g. for /setup, starts its own: `Installation(...).processes("console")`.)
- The gateway (`python -m thinkwatch.run --only gateway`: uvicorn serving
  `thinkwatch.asgi:gateway`) starts only for a test that asks for `gateway_url` or
  `traffic`, on the same database file with the same master key.

Each test gets a fresh browser context (1280x800, light theme); `admin_page` is one already
signed in as Alice. When a test fails, its page is saved to var/browser-failures/. With
THINKWATCH_SCREENSHOTS=<dir> (`make screenshots`), `screenshot(page, name)` saves
<dir>/<name>.png; otherwise it does nothing.
"""

import contextlib
import json
import os
import re
import secrets
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest
from django.conf import settings
from openai.types.chat import ChatCompletion
from playwright.sync_api import (
    Browser,
    BrowserContext,
    Page,
    Playwright,
    ViewportSize,
    sync_playwright,
)

from audit.models import GatewayLog
from tests.conftest import UPSTREAM_SECRET
from tests.factories import PASSWORD
from tests.fakes.openai_upstream import FakeOpenAI
from tests.processes import Processes

CHROMIUM = "/usr/bin/chromium"
ALICE = "alice@example.com"
SITE_NAME = "Acme AI"
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
FAILURES_DIR = settings.BASE_DIR / "var" / "browser-failures"
FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.failed:
        item.stash[FAILED] = True
    return report


@dataclass
class Installation:
    """A database file and master key the console and the gateway share."""

    root: Path
    master_key: str
    console: str = ""  # the console's base URL, once it runs
    setup: dict[str, Any] = field(default_factory=dict)  # what `manage.py setup --json` said

    @property
    def database(self) -> Path:
        return self.root / "thinkwatch.sqlite3"

    def env(self, data_dir: Path) -> dict[str, str]:
        return {
            "THINKWATCH_DATA_DIR": str(data_dir),
            "DATABASE_URL": f"sqlite:///{self.database}",
            "REDIS_URL": "",
            "THINKWATCH_MASTER_KEY": self.master_key,
        }

    def processes(self, name: str, **env: str) -> Processes:
        """`python -m thinkwatch.run --only <name>` on this installation (not started)."""
        data_dir = self.root / name
        return Processes(data_dir, name, shared_db=False, **self.env(data_dir), **env)

    def manage(self, *args: str, **env: str) -> str:
        """Runs `manage.py <args>` on this installation; returns what it printed."""
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            env={**os.environ, **self.env(self.root / "manage"), **env},
            cwd=settings.BASE_DIR,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, f"manage.py {' '.join(args)}:\n{done.stderr}"
        return done.stdout


@pytest.fixture(scope="session")
def installation(
    tmp_path_factory: pytest.TempPathFactory, fake_openai: FakeOpenAI
) -> Iterator[Installation]:
    """The console running on a fresh database, set up by `manage.py setup`."""
    found = Installation(root=tmp_path_factory.mktemp("browser"), master_key=secrets.token_hex(32))
    console = found.processes("console")
    console.start(console.console)  # migrates first, as `make run` does
    found.console = console.console
    output = found.manage(
        *("setup", "--no-input", "--json", "--admin-email", ALICE, "--site-name", SITE_NAME),
        *("--provider-type", "openai", "--provider-name", "OpenAI"),
        *("--provider-base-url", fake_openai.url, "--issue-key", "traffic"),
        THINKWATCH_ADMIN_PASSWORD=PASSWORD,
        THINKWATCH_PROVIDER_API_KEY=UPSTREAM_SECRET,
    )
    found.setup = json.loads(output)
    yield found
    console.close()


@pytest.fixture(scope="session")
def console(installation: Installation) -> str:
    """The console's base URL (daphne, as `make run` starts it)."""
    return installation.console


@pytest.fixture(scope="session")
def gateway_url(installation: Installation) -> Iterator[str]:
    """The gateway's base URL (uvicorn, as `make run` starts it); its provider is the fake."""
    processes = installation.processes(
        "gateway", THINKWATCH_CONFIG_POLL_SECONDS="0.1", THINKWATCH_AUDIT_FLUSH_SECONDS="0.05"
    )
    processes.start(processes.gateway)
    yield processes.gateway
    processes.close()


@pytest.fixture
def traffic(
    installation: Installation, gateway_url: str, upstream: FakeOpenAI
) -> Iterator[Callable[..., list[ChatCompletion]]]:
    """`traffic(n, model=...)` sends n chat requests through the gateway with the key setup
    issued, and returns once the gateway has written their n log records."""
    client = openai.OpenAI(
        base_url=f"{gateway_url}/v1",
        api_key=installation.setup["api_key"],
        max_retries=0,
        timeout=30,
    )

    def send(n: int, model: str = "gpt-4o-mini") -> list[ChatCompletion]:
        raw = [
            client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": f"hello {i}"}]
            )
            for i in range(n)
        ]
        wait_for_log_records(installation.database, [r.headers["x-request-id"] for r in raw])
        return [r.parse() for r in raw]

    yield send
    client.close()  # an idle keep-alive connection would hold up the gateway's shutdown


def wait_for_log_records(database: Path, request_ids: list[str], timeout: float = 10) -> None:
    """Read-only look at the shared database file: the gateway writes its records in
    batches off the request path, and a page showing them needs them written."""
    table = GatewayLog._meta.db_table
    marks = ",".join("?" * len(request_ids))
    query = f"SELECT count(*) FROM {table} WHERE request_id IN ({marks})"  # noqa: S608
    deadline = time.monotonic() + timeout
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        while db.execute(query, request_ids).fetchone()[0] < len(request_ids):
            assert time.monotonic() < deadline, f"gateway log records not written: {request_ids}"
            time.sleep(0.05)


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Chromium's sandbox cannot run as root; everyone else keeps it.
    chromium = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, chromium_sandbox=os.geteuid() != 0
    )
    yield chromium
    chromium.close()


def new_context(browser: Browser, console: str, **options: Any) -> BrowserContext:
    return browser.new_context(
        base_url=console,
        viewport=VIEWPORT,
        color_scheme="light",
        permissions=["clipboard-read", "clipboard-write"],
        **options,
    )


def sign_in(page: Page, username: str, password: str) -> None:
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


@pytest.fixture(scope="session")
def alice_session(browser: Browser, console: str) -> dict[str, Any]:
    """Alice's signed-in cookies, signed in once for the session."""
    context = new_context(browser, console)
    page = context.new_page()
    page.goto("/admin/login/?next=/admin/")
    sign_in(page, ALICE, PASSWORD)
    page.wait_for_url("**/admin/")
    state = context.storage_state()
    context.close()
    return dict(state)


def _open(
    request: pytest.FixtureRequest, browser: Browser, console: str, **options: Any
) -> Iterator[Page]:
    context = new_context(browser, console, **options)
    page = context.new_page()
    yield page
    if request.node.stash.get(FAILED, False):
        FAILURES_DIR.mkdir(parents=True, exist_ok=True)
        name = re.sub(r"[^\w.-]+", "_", request.node.nodeid)
        page.screenshot(path=FAILURES_DIR / f"{name}.png", full_page=True)
    context.close()


@pytest.fixture
def page(request: pytest.FixtureRequest, browser: Browser, console: str) -> Iterator[Page]:
    """A fresh, signed-out browser tab on the console (relative URLs are the console's)."""
    yield from _open(request, browser, console)


@pytest.fixture
def admin_page(
    request: pytest.FixtureRequest, browser: Browser, console: str, alice_session: dict[str, Any]
) -> Iterator[Page]:
    """A fresh browser tab signed in as Alice, the super admin."""
    yield from _open(request, browser, console, storage_state=alice_session)


@pytest.fixture
def screenshot() -> Callable[[Page, str], None]:
    target = os.environ.get("THINKWATCH_SCREENSHOTS", "")

    def save(page: Page, name: str) -> None:
        if target:
            page.screenshot(path=Path(target) / f"{name}.png")

    return save
