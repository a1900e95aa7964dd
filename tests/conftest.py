import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from django.contrib.auth.models import User

from audit.models import GatewayLog
from gateway import logs
from providers.models import Provider
from tests.factories import ProviderFactory, UserFactory, make_key
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.base import FakeServer
from tests.fakes.bedrock_upstream import FakeBedrock
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeAzureOpenAI, FakeOpenAI

UPSTREAM_SECRET = "sk-upstream-secret"


@pytest.fixture(autouse=True, scope="session")
def _no_audit_segments_from_earlier_runs() -> None:
    """Log records an earlier test session left undelivered belong to its database: the
    audit pipeline would adopt them (audit/pipeline.py) into this one's."""
    import shutil

    from django.conf import settings

    shutil.rmtree(settings.DATA_DIR / "auditq", ignore_errors=True)


@pytest.fixture(autouse=True, scope="session")
def _celery_runs_tasks_in_place() -> Iterator[None]:
    """Tasks a test triggers run where they are sent (no worker in the test process)."""
    from thinkwatch.celery import app

    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = False
    yield
    app.conf.task_always_eager = False


@pytest.fixture(autouse=True, scope="session")
def _fast_password_hashing() -> Iterator[None]:
    """Every persona has a password; hashing them with production's PBKDF2 rounds would
    cost half a second a test."""
    from django.test import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


def database_url(connection: Any) -> str:
    """The URL of the test database, for a subprocess that must share it."""
    settings = connection.settings_dict
    if settings["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{settings['NAME']}"
    return f"postgres://{settings['USER']}@{settings['HOST']}:{settings['PORT']}/{settings['NAME']}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiveServer:
    """An ASGI app served by uvicorn (as in production) on a loopback port, in a thread."""

    running: "LiveServer | None" = None

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            loop="uvloop",
            http="httptools",
            lifespan="on",
            log_level="warning",
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="gateway-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        LiveServer.running = self
        return self

    def __exit__(self, *exc: object) -> None:
        LiveServer.running = None
        self.server.should_exit = True
        self.thread.join(15)

    def wait_idle(self, timeout: float = 10) -> None:
        """Until no request is in flight: a stream's client may have its last event before
        the gateway has finished the request (and submitted its record)."""
        deadline = time.monotonic() + timeout
        while self.server.server_state.tasks and time.monotonic() < deadline:
            time.sleep(0.005)


@pytest.fixture(scope="session")
def fake_openai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def upstream(fake_openai: FakeOpenAI) -> Iterator[FakeOpenAI]:
    fake_openai.reset()
    yield fake_openai
    fake_openai.reset()


@pytest.fixture(scope="session")
def fakes(fake_openai: FakeOpenAI) -> Iterator[dict[str, FakeServer]]:
    """One fake per provider type (the OpenAI fake serves OpenAI-compatible too)."""
    started: dict[str, FakeServer] = {
        "azure_openai": FakeAzureOpenAI().start(),
        "anthropic": FakeAnthropic().start(),
        "gemini": FakeGemini().start(),
        "bedrock": FakeBedrock().start(),
    }
    yield {"openai": fake_openai, "openai_compatible": fake_openai, **started}
    for fake in started.values():
        fake.stop()


def forget_quota_counts() -> None:
    """Each test starts with no counts: a fresh in-process store, or no quota keys in Redis."""
    from django.conf import settings

    from quotas import admission

    admission._backend = None
    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        # Quota counts, and the routes' shared breakers and affinities (route ids repeat
        # from one test database to the next).
        for pattern in ("tw:q:*", "tw:route:*"):
            for key in client.scan_iter(match=pattern, count=1000):
                client.delete(key)
        client.close()


@pytest.fixture(autouse=True)
def _fresh_runtime_settings() -> Iterator[None]:
    """Runtime settings read from the table again after a test changed them (code on an
    event loop keeps the copy the gateway last loaded: LiveServer reloads it at start)."""
    from accounts import runtime

    runtime.store.clear()
    yield
    runtime.store.clear()


@pytest.fixture(scope="session")
def fake_backup() -> Iterator[FakeOpenAI]:
    """A second OpenAI fake: the other provider of a model routed two ways."""
    fake = FakeOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def backup(fake_backup: FakeOpenAI) -> Iterator[FakeOpenAI]:
    fake_backup.reset()
    yield fake_backup
    fake_backup.reset()


@pytest.fixture(autouse=True)
def _forget_audit_streams() -> None:
    """Log records a previous test left in the Redis streams belong to its database."""
    from django.conf import settings

    if settings.REDIS_URL:
        import redis

        client = redis.Redis.from_url(settings.REDIS_URL)
        for key in client.scan_iter(match=f"{settings.AUDIT_STREAM_PREFIX}audit:*", count=100):
            client.delete(key)
        client.close()


@pytest.fixture
def gateway(transactional_db: None, upstream: FakeOpenAI) -> Iterator[LiveServer]:
    from gateway import routing
    from thinkwatch.asgi import gateway as app

    forget_quota_counts()
    routing.clear()  # breakers and latencies of an earlier test's routes
    with LiveServer(app) as server:
        yield server


@pytest.fixture
def alice(db: None) -> User:
    """Alice administers the installation."""
    return UserFactory(username="alice@example.com", is_staff=True, is_superuser=True)


@pytest.fixture
def bob(db: None) -> User:
    """Bob is a developer who calls models through the gateway."""
    return UserFactory(username="bob@example.com")


@pytest.fixture
def openai_provider(db: None, upstream: FakeOpenAI) -> Provider:
    """An OpenAI provider whose endpoint is the fake upstream."""
    return ProviderFactory(
        name="openai", type="openai", base_url=upstream.url, api_key=UPSTREAM_SECRET
    )


@pytest.fixture
def bob_key(bob: User) -> str:
    return make_key(bob, name="bob laptop")[1]


@pytest.fixture
def client(gateway: LiveServer, openai_provider: Provider, bob_key: str) -> openai.OpenAI:
    """The official OpenAI SDK, pointed at the gateway with Bob's key."""
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=bob_key, max_retries=0, timeout=30)


def logged() -> list[GatewayLog]:
    """Every gateway log record, oldest first, once the writer has written them."""
    if LiveServer.running is not None:
        LiveServer.running.wait_idle()
    assert logs.writer.flush(10)
    return list(GatewayLog.objects.order_by("id"))


@pytest.hookimpl(trylast=True)  # after pytest-django has ordered the tests
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests run last: Playwright's sync API keeps an event loop running in the
    main thread for the rest of the session, and pytest-asyncio cannot start its loops
    after that."""
    browser = Path(__file__).parent / "browser"
    items.sort(key=lambda item: browser in item.path.parents)  # stable: order kept otherwise
