"""The first-run wizard on a console nobody has set up, and the log explorer's filters, in a
real browser."""

import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from accounts.setup_wizard import ALREADY_SET_UP
from tests.browser.conftest import ALICE, Installation, _open, new_context
from tests.browser.test_console import PLAINTEXT

Screenshot = Callable[[Page, str], None]
ADMIN = "first-admin@example.com"
STRONG = "Corr3ct-horse-battery"


@pytest.fixture
def fresh_console(tmp_path: Path) -> Iterator[str]:
    """A console of its own, on a database nobody has set up yet (no admin exists)."""
    found = Installation(root=tmp_path, master_key=secrets.token_hex(32))
    console = found.processes("console")
    try:
        console.start(console.console)  # migrates first, as `make run` does
        yield console.console
    finally:
        console.close()


@pytest.fixture
def fresh_page(
    request: pytest.FixtureRequest, browser: Browser, fresh_console: str
) -> Iterator[Page]:
    yield from _open(request, browser, fresh_console)


def fill_setup_form(page: Page, password: str, again: str) -> None:
    page.get_by_label("Site name").fill("Globex AI")
    page.get_by_label("Admin email").fill(ADMIN)
    page.get_by_label(re.compile(r"^Password:?$")).fill(password)
    page.get_by_label("Password (again)").fill(again)
    page.get_by_label("Key name").fill("laptop")
    page.get_by_role("button", name="Set up ThinkWatch").click()


def test_the_first_run_wizard_creates_the_admin_and_shows_the_key_once(
    fresh_page: Page, fresh_console: str, browser: Browser, screenshot: Screenshot
) -> None:
    page = fresh_page
    page.goto("/")
    expect(page).to_have_url(f"{fresh_console}/setup")
    expect(page.get_by_role("heading", name="Set up ThinkWatch")).to_be_visible()
    expect(page.get_by_label("Type")).to_have_value("")  # no provider now
    screenshot(page, "setup")

    fill_setup_form(page, "short", "short")

    expect(page.get_by_text("Please correct the errors below.")).to_be_visible()
    expect(page.get_by_text("This password is too short.")).to_be_visible()
    expect(page.get_by_role("heading", name="Set up ThinkWatch")).to_be_visible()

    fill_setup_form(page, STRONG, STRONG)

    expect(page.get_by_role("heading", name="ThinkWatch is set up")).to_be_visible()
    expect(page.get_by_text(f"You are signed in as {ADMIN}")).to_be_visible()
    expect(page.locator("#content-main")).to_contain_text("the super admin of Globex AI")
    expect(page.get_by_text("will not be shown again")).to_be_visible()
    plaintext = page.locator("#tw-secret").input_value()
    assert PLAINTEXT.match(plaintext)

    page.get_by_role("link", name="Open the console").click()
    expect(page).to_have_url(f"{fresh_console}/admin/")  # signed in: no sign-in page
    assert plaintext not in page.content()

    # Once an admin exists, /setup sends everyone to the sign-in page (which sends the
    # signed-in admin on to the console), saying why; the wizard's form is gone.
    page.goto("/setup")
    expect(page).to_have_url(f"{fresh_console}/admin/")
    expect(page.get_by_text(ALREADY_SET_UP)).to_be_visible()
    expect(page.get_by_role("button", name="Set up ThinkWatch")).to_have_count(0)
    assert plaintext not in page.content()

    stranger = new_context(browser, fresh_console).new_page()
    stranger.goto("/setup")
    expect(stranger).to_have_url(f"{fresh_console}/admin/login/")
    expect(stranger.get_by_text(ALREADY_SET_UP)).to_be_visible()
    expect(stranger.get_by_role("button", name="Log in")).to_be_visible()
    stranger.context.close()


def test_the_log_explorer_filters_by_model_and_shows_the_admin_audit(
    admin_page: Page, traffic: Callable[..., list], screenshot: Screenshot
) -> None:
    wanted = f"gpt-4o-{secrets.token_hex(3)}"
    other = f"gpt-4o-mini-{secrets.token_hex(3)}"
    traffic(2, model=wanted)
    traffic(3, model=other)

    admin_page.goto("/admin/logs/")
    rows = admin_page.locator("#result_list tbody tr")
    expect(rows.filter(has_text=wanted)).to_have_count(2)
    expect(rows.filter(has_text=other)).to_have_count(3)

    admin_page.get_by_label("Model").fill(wanted)
    admin_page.get_by_role("button", name="Filter").click()

    expect(admin_page).to_have_url(re.compile(rf"[?&]model={wanted}(&|$)"))
    expect(rows).to_have_count(2)
    expect(rows.get_by_role("cell", name=wanted, exact=True)).to_have_count(2)
    expect(rows.filter(has_text=other)).to_have_count(0)
    expect(admin_page.get_by_label("Model")).to_have_value(wanted)
    screenshot(admin_page, "logs")

    admin_page.get_by_role("link", name="Admin audit").click()
    expect(admin_page.get_by_role("link", name="Admin audit")).to_have_attribute(
        "aria-current", "page"
    )
    admin_page.get_by_label("Action").fill("auth.sign_in")
    admin_page.get_by_role("button", name="Filter").click()

    sign_ins = rows.filter(has=admin_page.get_by_role("cell", name="auth.sign_in", exact=True))
    expect(sign_ins.filter(has_text=ALICE).first).to_be_visible()
    expect(rows.filter(has_text="gpt-4o")).to_have_count(0)
