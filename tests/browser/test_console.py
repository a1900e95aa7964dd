"""The console in a real browser: signing in and out, providers, keys shown once, and the
gateway's traffic in its log."""

import contextlib
import re
import secrets
from collections.abc import Callable

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from tests.browser.conftest import ALICE, Installation, sign_in
from tests.factories import PASSWORD
from tests.fakes.openai_upstream import FakeOpenAI

Screenshot = Callable[[Page, str], None]
PLAINTEXT = re.compile(r"^tw-[0-9a-f]{96}$")


def unique(name: str) -> str:
    """Tests share one console for the session; what each creates is named apart."""
    return f"{name} {secrets.token_hex(3)}"


def create_key(page: Page, name: str) -> str:
    """Adds a key through its admin form; returns the plaintext the secret page shows."""
    page.goto("/admin/accounts/apikey/add/")
    page.get_by_label("Name").fill(name)
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.get_by_role("heading", name="API key created")).to_be_visible()
    # The field has no label of its own; its id is what the copy button targets.
    return page.locator("#tw-secret").input_value()


def test_it_shows_an_error_for_a_wrong_password(page: Page) -> None:
    page.goto("/")
    sign_in(page, ALICE, "Not-the-password-42")

    expect(page.get_by_text("Please enter the correct username and password")).to_be_visible()
    expect(page).to_have_url(re.compile(r"/admin/login/"))


def test_it_lands_in_the_console_after_signing_in(
    page: Page, console: str, screenshot: Screenshot
) -> None:
    page.goto("/")
    expect(page.get_by_role("button", name="Log in")).to_be_visible()
    screenshot(page, "login")

    sign_in(page, ALICE, PASSWORD)

    expect(page).to_have_url(f"{console}/admin/")
    expect(page.get_by_role("heading", name="Console", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name="Providers", exact=True)).to_be_visible()
    screenshot(page, "console")


def test_it_signs_out(page: Page, console: str) -> None:
    page.goto("/admin/")
    sign_in(page, ALICE, PASSWORD)
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="Logged out")).to_be_visible()

    page.goto("/admin/")

    expect(page).to_have_url(f"{console}/admin/login/?next=/admin/")


def test_it_lists_a_provider_added_through_the_console(
    admin_page: Page, fake_openai: FakeOpenAI, screenshot: Screenshot
) -> None:
    name = unique("Local vLLM")
    admin_page.goto("/admin/providers/provider/add/")
    admin_page.get_by_label("Name").fill(name)
    admin_page.get_by_label("Type").select_option("openai_compatible")
    admin_page.get_by_label("Base url").fill(fake_openai.url)
    admin_page.get_by_label(re.compile(r"^API key")).fill("sk-local")
    admin_page.get_by_role("button", name="Save", exact=True).click()

    expect(admin_page.get_by_text(f"The provider “{name}” was added successfully.")).to_be_visible()
    row = admin_page.get_by_role("row").filter(has=admin_page.get_by_role("link", name=name))
    expect(row).to_contain_text(fake_openai.url)
    expect(row).to_contain_text("OpenAI-compatible")
    screenshot(admin_page, "providers")


def test_it_shows_a_new_keys_plaintext_with_a_copy_button(
    admin_page: Page, screenshot: Screenshot
) -> None:
    plaintext = create_key(admin_page, unique("ci runner"))
    screenshot(admin_page, "key-created")

    admin_page.get_by_role("button", name="Copy").click()

    assert PLAINTEXT.match(plaintext)
    expect(admin_page.get_by_role("button", name="Copied")).to_be_visible()
    assert admin_page.evaluate("navigator.clipboard.readText()") == plaintext


def test_it_never_shows_the_plaintext_when_the_key_is_revisited(admin_page: Page) -> None:
    name = unique("ci runner")
    plaintext = create_key(admin_page, name)

    admin_page.get_by_role("link", name="Done").click()
    expect(admin_page.get_by_text(plaintext[:11], exact=True)).to_be_visible()  # the prefix
    change_page = admin_page.content()
    admin_page.goto(f"/admin/accounts/apikey/?q={name}")
    expect(admin_page.get_by_role("link", name=name)).to_be_visible()

    assert plaintext not in change_page
    assert plaintext not in admin_page.content()


def test_it_does_not_show_the_plaintext_again_on_going_back(admin_page: Page) -> None:
    plaintext = create_key(admin_page, unique("ci runner"))
    admin_page.get_by_role("link", name="Done").click()

    # The page is no-store, so Chromium refuses to show it again (net::ERR_CACHE_MISS).
    with contextlib.suppress(PlaywrightError):
        admin_page.go_back()
    admin_page.wait_for_load_state()

    assert plaintext not in admin_page.content()


def test_it_does_not_show_the_plaintext_again_on_reload(admin_page: Page) -> None:
    plaintext = create_key(admin_page, unique("ci runner"))

    admin_page.reload()

    assert plaintext not in admin_page.content()


def test_it_issues_no_second_key_when_the_secret_page_is_reloaded(admin_page: Page) -> None:
    name = unique("ci runner")
    create_key(admin_page, name)

    admin_page.reload()

    admin_page.goto(f"/admin/accounts/apikey/?q={name}")
    keys = admin_page.get_by_role("link", name=name)
    expect(keys.first).to_be_visible()
    assert keys.count() == 1


def test_it_lists_the_gateways_requests_in_the_gateway_log(
    admin_page: Page, installation: Installation, traffic: Callable[..., list]
) -> None:
    model = f"gpt-4o-mini-{secrets.token_hex(3)}"
    traffic(3, model=model)

    admin_page.goto(f"/admin/audit/gatewaylog/?q={model}")

    rows = admin_page.get_by_role("row").filter(has_text=model)
    expect(rows).to_have_count(3)
    expect(rows.get_by_role("cell", name="200", exact=True)).to_have_count(3)
    prefix = installation.setup["key"]["prefix"]
    expect(rows.get_by_role("cell", name=prefix, exact=True)).to_have_count(3)
