"""Runtime settings: the console page, the API, and every process following a change.

Alice administers the installation; Bob is a developer, with no right to the settings;
Carol may read the settings (a custom role), not change them.
"""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest
import time_machine
from aiohttp import web
from django import forms
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.utils import timezone
from pytest_django import DjangoDbBlocker
from pytest_django.fixtures import Settings

from accounts import console_settings, runtime, tasks
from accounts.models import ApiKey, RuntimeSetting
from audit.models import AuditEvent
from gateway import revision
from gateway.models import ConfigRevision
from mcpgw import credentials, sessions, ssrf
from quotas import logic as quota_logic
from quotas.models import Budget, BudgetAlert
from tests.conftest import database_url
from tests.factories import (
    BudgetFactory,
    RoleAssignmentFactory,
    RoleFactory,
    UserFactory,
    make_key,
)
from tests.fakes.base import FakeServer
from thinkwatch.lib.db import off_loop

PAGE = "/admin/settings/"
API = "/api/settings"
HOOK = "https://hooks.example.com/services/T0/B0/hook-token-do-not-show"


@pytest.fixture(autouse=True)
def _settings_as_stored(django_db_blocker: DjangoDbBlocker) -> Iterator[None]:
    """Each test starts from the table and leaves this process's copy as the table is once
    it has gone (code on an event loop reads the copy and never the table)."""
    runtime.store.clear()
    yield
    with django_db_blocker.unblock():
        runtime.store.reload()


@pytest.fixture
def carol(db: None) -> User:
    """Carol may read the settings, not change them."""
    user = cast(User, UserFactory(username="carol@example.com"))
    role = RoleFactory(
        name="Settings reader", slug="settings-reader", permissions=["settings:read"]
    )
    RoleAssignmentFactory(user=user, role=role, team=None)
    return user


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def api_for(user: User) -> Client:
    _, key = make_key(user, name="console", surfaces=["console"])
    return Client(HTTP_AUTHORIZATION=f"Bearer {key}")


def patch(client: Client, changes: dict[str, Any]) -> Any:
    return client.patch(API, changes, content_type="application/json")


def errors(response: Any) -> dict[str, str]:
    return {e["loc"][-1]: e["msg"] for e in response.json()["detail"]}


def page_form(**changes: Any) -> dict[str, Any]:
    """The settings page's form as the browser sends it, with `changes` typed in."""
    as_sent: dict[type, Callable[[Any], str]] = {
        bool: lambda v: "on",
        list: "\n".join,
        int: str,
        str: str,
    }
    data = {
        entry.spec.key: as_sent[entry.spec.kind](entry.value)
        for entry in runtime.describe()
        # An empty secret field keeps the value; an unticked box is not sent at all.
        if not entry.spec.secret and entry.value is not False
    }
    return {**data, **changes}


def stored() -> dict[str, Any]:
    return dict(RuntimeSetting.objects.values_list("key", "value"))


# --- the console page --------------------------------------------------------------------


def test_it_shows_every_setting_by_category(alice: User) -> None:
    html = signed_in(alice).get(PAGE).content.decode()

    for spec in runtime.SPECS:
        assert spec.label in html
        assert f'<h2 class="fieldset-heading">{spec.category}</h2>' in html
    assert html.count('class="fieldset-heading"') == len({s.category for s in runtime.SPECS})


def test_it_links_the_page_from_the_console_navigation(alice: User) -> None:
    assert f'href="{PAGE}"' in signed_in(alice).get("/admin/").content.decode()


def test_it_shows_a_reader_the_settings_without_a_way_to_change_them(carol: User) -> None:
    response = signed_in(carol).get(PAGE)

    html = response.content.decode()
    assert response.status_code == 200
    assert 'name="keys.rotation_grace_hours"' in html
    assert html.count(" disabled") >= len(runtime.SPECS)
    assert 'value="Save"' not in html


def test_it_refuses_a_readers_change_on_the_page(carol: User) -> None:
    response = signed_in(carol).post(PAGE, page_form(**{"keys.rotation_grace_hours": "48"}))

    assert response.status_code == 403
    assert stored() == {}


def test_it_refuses_the_page_without_the_settings_read_permission(bob: User) -> None:
    assert signed_in(bob).get(PAGE).status_code == 403


def test_it_sends_a_visitor_to_sign_in(db: None) -> None:
    response = Client().get(PAGE)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


def test_it_saves_what_changed_and_says_who_changed_it(alice: User) -> None:
    console = signed_in(alice)

    response = console.post(
        PAGE,
        page_form(
            **{
                "keys.rotation_grace_hours": "48",
                "security.cors_allowed_origins": "https://tools.example.com\n\nhttps://b.example.com",
            }
        ),
    )

    assert response.status_code == 302
    assert stored() == {
        "keys.rotation_grace_hours": 48,
        "security.cors_allowed_origins": ["https://tools.example.com", "https://b.example.com"],
    }
    html = console.get(PAGE).content.decode()
    assert html.count("changed by alice@example.com on") == 2
    assert RuntimeSetting.objects.get(key="keys.rotation_grace_hours").updated_by == alice


def test_it_unticks_a_checkbox(alice: User) -> None:
    form = page_form()
    del form["security.bind_sessions_to_ip"]

    signed_in(alice).post(PAGE, form)

    assert stored() == {"security.bind_sessions_to_ip": False}


def test_it_saves_nothing_when_one_field_is_invalid_and_says_which(alice: User) -> None:
    form = page_form(**{"keys.rotation_grace_hours": "48", "gateway.public_url": "gateway:3000"})

    response = signed_in(alice).post(PAGE, form)

    html = response.content.decode()
    assert response.status_code == 200
    assert "Nothing was saved" in html
    assert "&#x27;gateway:3000&#x27; is not an http(s) URL." in html
    assert html.index("is not an http(s) URL") < html.index('name="gateway.public_url"')
    assert stored() == {}


@pytest.mark.parametrize(
    ("key", "typed", "message"),
    [
        ("keys.rotation_grace_hours", "721", "at most 720."),
        ("keys.rotation_grace_hours", "a day", "Enter a whole number."),
        ("mcp.session_idle_seconds", "59", "at least 60."),
        ("security.cors_allowed_origins", "https://a.example.com/app", "has a path"),
        ("console.public_url", "console.example.com", "is not an http(s) URL"),
    ],
)
def test_it_checks_each_field_on_the_page(alice: User, key: str, typed: str, message: str) -> None:
    response = signed_in(alice).post(PAGE, page_form(**{key: typed}))

    assert response.status_code == 200
    assert message in response.content.decode()
    assert stored() == {}


def test_it_saves_a_change_beside_an_environment_value_beyond_the_limits(
    alice: User, settings: Settings
) -> None:
    settings.MCP_SESSION_IDLE_SECONDS = 30 * 86400  # the page's limit is 7 days

    response = signed_in(alice).post(PAGE, page_form(**{"keys.rotation_grace_hours": "48"}))

    assert response.status_code == 302
    assert stored() == {"keys.rotation_grace_hours": 48}


def test_it_resets_a_setting_to_its_default(alice: User) -> None:
    runtime.update({"keys.rotation_grace_hours": 48, "mcp.session_idle_seconds": 600}, by=alice)

    response = signed_in(alice).post(PAGE, page_form(**{"reset": "keys.rotation_grace_hours"}))

    assert response.status_code == 302
    assert stored() == {"mcp.session_idle_seconds": 600}
    assert runtime.setting("keys.rotation_grace_hours") == settings.KEY_ROTATION_GRACE_HOURS


def test_it_offers_a_reset_only_for_changed_settings(alice: User) -> None:
    runtime.update({"keys.rotation_grace_hours": 48}, by=alice)

    html = signed_in(alice).get(PAGE).content.decode()

    assert html.count('name="reset"') == 1
    assert 'name="reset" value="keys.rotation_grace_hours"' in html


def test_it_puts_save_before_every_reset_so_enter_saves(alice: User) -> None:
    runtime.update({"keys.rotation_grace_hours": 48}, by=alice)

    html = signed_in(alice).get(PAGE).content.decode()

    assert html.index('value="Save"') < html.index('name="reset"')


def test_it_has_no_inline_script(alice: User) -> None:
    html = signed_in(alice).get(PAGE).content.decode()

    assert "<script>" not in html
    assert " on" + "click=" not in html


@pytest.mark.parametrize(
    ("kind", "extra", "widget", "attrs"),
    [
        (bool, {}, forms.CheckboxInput, {}),
        (int, {"minimum": 1, "maximum": 9}, forms.NumberInput, {"min": 1, "max": 9}),
        (str, {}, forms.TextInput, {}),
        (str, {"choices": ("low", "high")}, forms.Select, {}),
        (str, {"secret": True}, forms.PasswordInput, {}),
        (list, {}, forms.Textarea, {}),
    ],
)
def test_it_gives_each_kind_its_widget(
    kind: type, extra: dict[str, Any], widget: type, attrs: dict[str, Any]
) -> None:
    spec = runtime.Spec("x.y", "X", "Y", "Help.", kind, lambda: None, **extra)

    field = console_settings._field(spec)

    assert type(field.widget) is widget
    assert attrs.items() <= cast(forms.Widget, field.widget).attrs.items()


def test_it_never_shows_a_secret_setting_on_the_page(alice: User) -> None:
    console = signed_in(alice)

    console.post(PAGE, page_form(**{"quotas.budget_alert_webhook_url": HOOK}))
    html = console.get(PAGE).content.decode()

    assert stored()["quotas.budget_alert_webhook_url"] == HOOK
    assert "hook-token-do-not-show" not in html
    assert "set: https://hooks.example.com/…" in html


def test_it_keeps_a_secret_setting_when_its_field_is_left_empty(alice: User) -> None:
    runtime.update({"quotas.budget_alert_webhook_url": HOOK}, by=alice)

    signed_in(alice).post(PAGE, page_form(**{"keys.rotation_grace_hours": "48"}))

    assert stored()["quotas.budget_alert_webhook_url"] == HOOK


def test_it_clears_a_secret_setting_when_asked(alice: User) -> None:
    runtime.update({"quotas.budget_alert_webhook_url": HOOK}, by=alice)

    signed_in(alice).post(PAGE, page_form(**{"quotas.budget_alert_webhook_url:clear": "on"}))

    assert stored()["quotas.budget_alert_webhook_url"] == ""


# --- the API -----------------------------------------------------------------------------


def test_it_lists_every_setting_with_its_default(carol: User) -> None:
    response = api_for(carol).get(API)

    listed = {s["key"]: s for s in response.json()}
    assert response.status_code == 200
    assert list(listed) == [spec.key for spec in runtime.SPECS]
    assert listed["keys.rotation_grace_hours"] == {
        "key": "keys.rotation_grace_hours",
        "category": "Keys",
        "label": "Rotation grace period (hours)",
        "help": runtime.REGISTRY["keys.rotation_grace_hours"].help,
        "kind": "int",
        "secret": False,
        "minimum": 0,
        "maximum": 720,
        "choices": None,
        "value": settings.KEY_ROTATION_GRACE_HOURS,
        "default": settings.KEY_ROTATION_GRACE_HOURS,
        "is_default": True,
        "updated_at": None,
        "updated_by": None,
    }


def test_a_reader_cannot_change_or_reset_a_setting(carol: User) -> None:
    client = api_for(carol)

    changed = patch(client, {"keys.rotation_grace_hours": 48})
    reset = client.delete(f"{API}/keys.rotation_grace_hours")

    assert changed.status_code == reset.status_code == 403
    assert changed.json() == {"detail": "You need the settings:update permission."}
    assert stored() == {}


def test_it_refuses_the_settings_without_the_settings_read_permission(bob: User) -> None:
    response = api_for(bob).get(API)

    assert response.status_code == 403
    assert response.json() == {"detail": "You need the settings:read permission."}


def test_it_changes_several_settings_at_once(alice: User) -> None:
    response = patch(
        api_for(alice),
        {"keys.rotation_grace_hours": 48, "security.bind_sessions_to_ip": False},
    )

    listed = {s["key"]: s for s in response.json()}
    assert response.status_code == 200
    assert stored() == {"keys.rotation_grace_hours": 48, "security.bind_sessions_to_ip": False}
    assert listed["keys.rotation_grace_hours"]["value"] == 48
    assert listed["keys.rotation_grace_hours"]["is_default"] is False
    assert listed["keys.rotation_grace_hours"]["updated_by"] == "alice@example.com"
    assert listed["security.bind_sessions_to_ip"]["value"] is False


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("security.bind_sessions_to_ip", "yes", "Input should be a valid boolean"),
        ("keys.rotation_grace_hours", "48", "Input should be a valid integer"),
        ("keys.rotation_grace_hours", -1, "keys.rotation_grace_hours: at least 0."),
        ("mcp.session_idle_seconds", 10**7, "mcp.session_idle_seconds: at most 604800."),
        ("gateway.public_url", "gateway:3000", "is not an http(s) URL."),
        ("gateway.public_url", None, "Input should be a valid string"),
        ("security.cors_allowed_origins", "https://a.example.com", "Input should be a valid list"),
        ("security.cors_allowed_origins", ["https://a.example.com/app"], "has a path"),
        ("accounts.default_role", "no-such-role", "there is no role 'no-such-role'."),
        ("no.such_setting", 1, "Extra inputs are not permitted"),
    ],
)
def test_it_checks_each_value_by_its_kind(alice: User, key: str, value: Any, message: str) -> None:
    response = patch(api_for(alice), {key: value})

    assert response.status_code == 422
    assert list(errors(response)) == [key]
    assert message in errors(response)[key]
    assert stored() == {}


def test_it_changes_nothing_when_one_value_is_invalid(alice: User) -> None:
    response = patch(
        api_for(alice),
        {"keys.rotation_grace_hours": 48, "mcp.session_idle_seconds": 5},
    )

    assert response.status_code == 422
    assert response.json()["detail"] == [
        {
            "type": "value_error",
            "loc": ["body", "payload", "mcp.session_idle_seconds"],
            "msg": "mcp.session_idle_seconds: at least 60.",
        }
    ]
    assert stored() == {}


def test_it_resets_a_setting_through_the_api(alice: User) -> None:
    client = api_for(alice)
    patch(client, {"keys.rotation_grace_hours": 48})

    response = client.delete(f"{API}/keys.rotation_grace_hours")

    assert response.status_code == 200
    assert response.json()["is_default"] is True
    assert response.json()["value"] == settings.KEY_ROTATION_GRACE_HOURS
    assert stored() == {}


def test_it_answers_404_for_an_unknown_setting(alice: User) -> None:
    assert api_for(alice).delete(f"{API}/no.such_setting").status_code == 404


def test_it_never_returns_a_secret_setting_in_full(alice: User) -> None:
    client = api_for(alice)

    changed = patch(client, {"quotas.budget_alert_webhook_url": HOOK})
    listed = client.get(API)

    assert changed.status_code == 200
    assert "hook-token-do-not-show" not in changed.content.decode() + listed.content.decode()
    hook = next(s for s in listed.json() if s["key"] == "quotas.budget_alert_webhook_url")
    assert hook["value"] == "https://hooks.example.com/…"
    assert hook["secret"] is True


def test_it_does_not_echo_an_invalid_secret(alice: User) -> None:
    response = patch(api_for(alice), {"quotas.budget_alert_webhook_url": "hooks/s3cr3t-token"})

    assert response.status_code == 422
    assert "s3cr3t-token" not in response.content.decode()


def test_it_records_who_changed_what_without_the_secret(alice: User) -> None:
    patch(api_for(alice), {"quotas.budget_alert_webhook_url": HOOK, "keys.rotation_grace_hours": 1})

    events = AuditEvent.objects.filter(object_type="setting").order_by("object_id")

    assert [(e.action, e.actor, e.object_id, e.detail) for e in events] == [
        ("setting.changed", "alice@example.com", "keys.rotation_grace_hours", {"value": 1}),
        (
            "setting.changed",
            "alice@example.com",
            "quotas.budget_alert_webhook_url",
            {"value": "https://hooks.example.com/…"},
        ),
    ]


def test_it_documents_every_setting_in_the_openapi_schema(alice: User) -> None:
    schema = api_for(alice).get("/api/openapi.json").json()

    patch_schema = schema["components"]["schemas"]["SettingsPatch"]
    assert list(patch_schema["properties"]) == [spec.key for spec in runtime.SPECS]
    assert patch_schema["additionalProperties"] is False
    assert patch_schema["properties"]["mcp.session_idle_seconds"]["minimum"] == 60
    assert patch_schema["properties"]["quotas.budget_alert_webhook_url"]["writeOnly"] is True
    assert "required" not in patch_schema


# --- applying a change without a restart --------------------------------------------------


def test_a_save_bumps_the_gateways_config_revision(transactional_db: None) -> None:
    before = revision.current()[0]

    runtime.update({"keys.rotation_grace_hours": 48})
    runtime.reset("keys.rotation_grace_hours")

    assert revision.current()[0] == before + 2


def test_another_process_sees_a_change_after_its_copy_ages(db: None) -> None:
    now = [100.0]
    elsewhere = runtime._Store(clock=lambda: now[0])
    assert elsewhere.values() == {}

    runtime.update({"keys.rotation_grace_hours": 48})
    kept = dict(elsewhere.values())
    now[0] += runtime.TTL_SECONDS

    assert kept == {}
    assert elsewhere.values() == {"keys.rotation_grace_hours": 48}


WATCHER = """
import time
import django
django.setup()
from accounts.runtime import setting
last, deadline = None, time.monotonic() + 30
while time.monotonic() < deadline:
    value = setting("keys.rotation_grace_hours")
    if value != last:
        print(value, flush=True)
        last = value
    time.sleep(0.01)
"""


def test_a_second_process_follows_a_change_within_a_second(transactional_db: None) -> None:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "thinkwatch.settings",
        "DATABASE_URL": database_url(connection),
        "THINKWATCH_DATA_DIR": str(settings.DATA_DIR),
    }
    process = subprocess.Popen(
        [sys.executable, "-c", WATCHER],
        env=env,
        cwd=settings.BASE_DIR,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        first = process.stdout.readline().strip()  # type: ignore[union-attr]
        runtime.update({"keys.rotation_grace_hours": 48})
        changed_at = time.monotonic()
        then = process.stdout.readline().strip()  # type: ignore[union-attr]
        took = time.monotonic() - changed_at
    finally:
        process.kill()
        process.wait()

    assert first == str(settings.KEY_ROTATION_GRACE_HOURS)
    assert then == "48"
    assert took < 1.5


def change_elsewhere(key: str, value: Any) -> None:
    """What another process's save leaves: the row and a new revision, no signal here."""
    RuntimeSetting.objects.bulk_create([RuntimeSetting(key=key, value=value)])
    ConfigRevision.objects.update_or_create(
        pk=1, defaults={"value": revision.current()[0] + 1, "changed_at": timezone.now()}
    )


async def eventually(read: Callable[[], Any], expected: Any, seconds: float = 3.0) -> Any:
    deadline = time.monotonic() + seconds
    value = read()
    while value != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        value = read()
    return value


async def test_the_gateways_config_watch_reloads_the_settings(transactional_db: None) -> None:
    def grace() -> Any:
        return runtime.setting("keys.rotation_grace_hours")

    await off_loop(runtime.store.reload)()
    seen = await off_loop(revision.current)()
    watcher = asyncio.create_task(revision.watch(seen, 0.05))
    try:
        await off_loop(change_elsewhere)("keys.rotation_grace_hours", 48)
        before = grace()
        after = await eventually(grace, 48)
    finally:
        watcher.cancel()

    assert before == settings.KEY_ROTATION_GRACE_HOURS
    assert after == 48


async def test_the_gateway_loads_the_settings_when_it_starts(transactional_db: None) -> None:
    await off_loop(change_elsewhere)("mcp.session_idle_seconds", 600)

    await revision.load()

    assert runtime.setting("mcp.session_idle_seconds") == 600


async def test_it_never_reads_the_table_on_an_event_loop(transactional_db: None) -> None:
    await off_loop(runtime.store.reload)()
    await off_loop(change_elsewhere)("keys.rotation_grace_hours", 48)
    runtime.store.clear()

    # A query here would raise SynchronousOnlyOperation.
    assert runtime.setting("keys.rotation_grace_hours") == settings.KEY_ROTATION_GRACE_HOURS


def test_a_local_config_change_makes_this_process_read_the_table_again(db: None) -> None:
    assert runtime.setting("keys.rotation_grace_hours") == settings.KEY_ROTATION_GRACE_HOURS
    change_elsewhere("keys.rotation_grace_hours", 48)

    revision.invalidate_local()

    assert runtime.setting("keys.rotation_grace_hours") == 48


# --- each moved setting takes effect -------------------------------------------------------


@pytest.mark.parametrize(("idle", "kept"), [(60, False), (3600, True)])
def test_mcp_sessions_expire_after_the_idle_setting(db: None, idle: int, kept: bool) -> None:
    runtime.update({"mcp.session_idle_seconds": idle})
    runtime.setting("mcp.session_idle_seconds")  # this process's copy, as the watcher loads it
    store = sessions.MemoryStore()

    async def unused_for(seconds: float, clock: time_machine.Traveller) -> Any:
        await store.put(sessions.Session(id="s1", key_id=1, version="2025-06-18"))
        clock.shift(seconds)
        return await store.get("s1")

    with time_machine.travel(1_800_000_000, tick=False) as clock:
        found = asyncio.run(unused_for(61, clock))

    assert (found is not None) is kept


def test_connect_links_follow_the_public_console_url(db: None) -> None:
    runtime.update({"console.public_url": "https://console.example.com/"})

    assert credentials.connect_url(7) == "https://console.example.com/mcp/connect/7/"


def test_the_oauth_redirect_uri_follows_the_public_console_url(db: None) -> None:
    from mcpgw.console_views import callback_url

    runtime.update({"console.public_url": "https://console.example.com"})

    assert callback_url(None) == "https://console.example.com/mcp/oauth/callback"  # type: ignore[arg-type]


class WebhookSink(FakeServer):
    name = "settings-webhook"

    def routes(self, app: Any) -> None:
        async def receive(request: web.Request) -> web.Response:
            await self.record(request)
            return web.Response(status=204)

        app.router.add_post("/alerts", receive)


@pytest.fixture
def sink() -> Iterator[WebhookSink]:
    server = WebhookSink().start()
    yield server  # type: ignore[misc]
    server.stop()


def test_budget_alerts_go_to_the_webhook_setting(db: None, sink: WebhookSink) -> None:
    budget = cast(Budget, BudgetFactory(subject_kind="user", subject_id="1", limit=Decimal("10")))
    alert = BudgetAlert.objects.create(
        budget=budget, period_key="2026-11", subject_id="user:1", threshold=80, spent=Decimal(8)
    )
    runtime.update({"quotas.budget_alert_webhook_url": f"{sink.root}/alerts"})

    assert quota_logic.deliver_alert(alert.pk) is True

    assert [r.body["threshold_percent"] for r in sink.requests] == [80]


@pytest.mark.parametrize(("days", "left"), [(30, 1), (5, 0)])
def test_revoked_keys_are_purged_after_the_setting_days(alice: User, days: int, left: int) -> None:
    key, _ = make_key(alice)
    ApiKey.objects.filter(pk=key.pk).update(revoked_at=timezone.now() - timedelta(days=10))
    runtime.update({"keys.deleted_purge_days": days})

    tasks.purge_deleted_keys()

    assert ApiKey.objects.filter(pk=key.pk).count() == left


@pytest.fixture
def _no_allowed_networks(settings: Settings) -> Iterator[None]:
    settings.MCP_ALLOWED_NETWORKS = []
    ssrf._allowed.cache_clear()
    yield
    ssrf._allowed.cache_clear()


@pytest.mark.usefixtures("_no_allowed_networks")
def test_new_mcp_servers_start_with_the_timeout_setting(alice: User) -> None:
    runtime.update({"mcp.default_timeout_seconds": 45})
    body = {"name": "GitHub", "prefix": "github", "url": "https://1.1.1.1/mcp"}

    created = api_for(alice).post("/api/mcp/servers", body, content_type="application/json")
    form = signed_in(alice).get("/admin/mcpgw/mcpserver/add/").content.decode()

    assert created.json()["timeout_seconds"] == 45.0
    assert 'name="timeout_seconds" value="45"' in form


def test_rotations_take_the_grace_setting_by_default(alice: User) -> None:
    runtime.update({"keys.rotation_grace_hours": 2})
    key, _ = make_key(alice)

    form = signed_in(alice).get(f"/admin/accounts/apikey/{key.pk}/rotate/").content.decode()
    rotated = api_for(alice).post(f"/api/keys/{key.pk}/rotate", {}, content_type="application/json")

    grace_ends_at = ApiKey.objects.values_list("grace_ends_at", flat=True).get(pk=key.pk)
    assert rotated.status_code == 201
    assert grace_ends_at is not None
    assert timedelta(hours=1, minutes=59) < grace_ends_at - timezone.now() <= timedelta(hours=2)
    assert 'name="grace_hours" value="2"' in form


# --- docs ----------------------------------------------------------------------------------


def test_the_configuration_docs_list_every_setting() -> None:
    docs = (Path(settings.BASE_DIR) / "docs" / "configuration.md").read_text()
    section = docs[docs.index("## Runtime settings") :]

    for spec in runtime.SPECS:
        assert f"`{spec.key}`" in section
