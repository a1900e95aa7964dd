"""The dashboard, usage and guide pages in a real browser, under the console's CSP: the
dashboard's websocket through daphne, traffic from the real gateway, the copy buttons."""

import secrets
from collections.abc import Callable

from playwright.sync_api import ConsoleMessage, Page, expect

Screenshot = Callable[[Page, str], None]


def errors_of(page: Page) -> list[ConsoleMessage]:
    """The page's console messages, to check afterwards (CSP violations land here)."""
    messages: list[ConsoleMessage] = []
    page.on("console", lambda message: messages.append(message))
    return messages


def test_it_shows_the_gateways_traffic_on_the_live_dashboard(
    admin_page: Page, traffic: Callable[..., list], screenshot: Screenshot
) -> None:
    messages = errors_of(admin_page)
    model = f"gpt-4o-mini-{secrets.token_hex(3)}"
    admin_page.goto("/admin/dashboard/")
    expect(admin_page.locator("[data-status]")).to_contain_text("Updated")

    traffic(8, model=model)

    by_requests = admin_page.locator("[data-top='top_models.by_requests']")
    expect(by_requests.get_by_role("row").filter(has_text=model)).to_contain_text("8")
    screenshot(admin_page, "dashboard")
    assert [m.text for m in messages if m.type == "error"] == []


def test_it_exports_the_usage_it_shows(
    admin_page: Page, traffic: Callable[..., list], screenshot: Screenshot
) -> None:
    model = f"gpt-4o-mini-{secrets.token_hex(3)}"
    traffic(2, model=model)
    admin_page.goto("/admin/usage/?group_by=model")
    expect(admin_page.get_by_role("row").filter(has_text=model)).to_contain_text("2")
    screenshot(admin_page, "usage")

    with admin_page.expect_download() as download:
        admin_page.get_by_role("link", name="Export CSV").click()

    assert download.value.suggested_filename.startswith("thinkwatch-usage-model-")
    assert model in download.value.path().read_text()


def test_it_copies_a_guide_snippet(admin_page: Page, screenshot: Screenshot) -> None:
    messages = errors_of(admin_page)
    admin_page.goto("/admin/guide/")
    snippet = admin_page.locator("#tw-curl-1").input_value()
    screenshot(admin_page, "guide")

    admin_page.locator("[data-copy-target='tw-curl-1']").click()

    assert admin_page.evaluate("navigator.clipboard.readText()") == snippet
    assert [m.text for m in messages if m.type == "error"] == []
