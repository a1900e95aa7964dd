"""The first-run wizard in the browser, at /setup while no admin exists: the same
`accounts.logic.initialize_site` and `validate_admin` as `manage.py setup`.

Once an admin exists, /setup (GET or POST) sends the visitor to the sign-in page with a
message saying so: someone who bookmarked it learns where to go, and a second wizard
that lost the race (initialize_site serialises them) creates nothing.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import login
from django.contrib.auth.password_validation import password_validators_help_text_html
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts import logic
from accounts.models import ApiKey, Organisation
from providers.models import Provider
from providers.specs import SPECS

ALREADY_SET_UP = "ThinkWatch is already set up: an admin account exists. Sign in."
_BACKEND = "django.contrib.auth.backends.ModelBackend"
# Provider model fields as the form names them (Provider.full_clean's errors).
_PROVIDER_FIELDS = {
    "type": "provider_type",
    "name": "provider_name",
    "base_url": "provider_base_url",
}


def _max(model: Any, field: str) -> int:
    return int(model._meta.get_field(field).max_length)


class SetupForm(forms.Form):
    site_name = forms.CharField(max_length=_max(Organisation, "name"), initial="ThinkWatch")
    admin_email = forms.EmailField(
        label="Admin email", widget=forms.EmailInput(attrs={"autocomplete": "username"})
    )
    admin_password = forms.CharField(
        label="Password",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validators_help_text_html,
    )
    admin_password_again = forms.CharField(
        label="Password (again)",
        strip=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
    )
    provider_type = forms.ChoiceField(
        label="Type",
        required=False,
        choices=[
            ("", "No provider now"),
            *((t, SPECS[t].label) for t in logic.SETUP_PROVIDER_TYPES),
        ],
    )
    provider_name = forms.CharField(label="Name", required=False, max_length=_max(Provider, "name"))
    provider_base_url = forms.CharField(
        label="Base URL",
        required=False,
        max_length=_max(Provider, "base_url"),
        help_text="Empty for OpenAI's own; required for an OpenAI-compatible server.",
    )
    provider_api_key = forms.CharField(
        label="API key",
        required=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "off"}),
        help_text="Stored encrypted; never shown again.",
    )
    key_name = forms.CharField(
        label="Key name",
        required=False,
        max_length=_max(ApiKey, "name"),
        help_text="Issue a first ThinkWatch API key for you with this name (empty: none).",
    )

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        email, password = data.get("admin_email"), data.get("admin_password")
        if password and data.get("admin_password_again") != password:
            self.add_error("admin_password_again", "The passwords differ.")
        if email and password:
            for field, problems in logic.validate_admin(email, password).items():
                self.add_error(field, problems)
        if data.get("provider_type") and not data.get("provider_name", "").strip():
            self.add_error("provider_name", "Give the provider a name.")
        extras = ("provider_name", "provider_base_url", "provider_api_key")
        if not data.get("provider_type") and any(data.get(f) for f in extras):
            self.add_error("provider_type", "Choose a type to add a provider.")
        return data

    def setup_values(self) -> dict[str, Any]:
        """initialize_site's arguments."""
        data = self.cleaned_data
        provider = None
        if data["provider_type"]:
            provider = {
                "type": data["provider_type"],
                "name": data["provider_name"].strip(),
                "base_url": data["provider_base_url"].strip(),
                "api_key": data["provider_api_key"],
            }
        return {
            "admin_email": data["admin_email"],
            "admin_password": data["admin_password"],
            "site_name": data["site_name"].strip(),
            "provider": provider,
            "key_name": data["key_name"].strip() or None,
        }

    def add_model_errors(self, error: ValidationError) -> None:
        if not hasattr(error, "error_dict"):
            self.add_error(None, error.messages)
            return
        for field, problems in error.message_dict.items():
            if field in _PROVIDER_FIELDS:
                self.add_error(_PROVIDER_FIELDS[field], problems)
            else:
                self.add_error(None, [f"{field}: {problem}" for problem in problems])


def _page(request: HttpRequest, template: str, status: int = 200, **context: Any) -> HttpResponse:
    context = {**admin.site.each_context(request), "title": "Set up ThinkWatch", **context}
    return render(request, f"setup/{template}", context, status=status)


def _already_set_up(request: HttpRequest) -> HttpResponse:
    messages.info(request, ALREADY_SET_UP)
    return redirect("admin:login")


@never_cache  # no-store: the last page shows the new key's plaintext
@require_http_methods(["GET", "POST"])
def wizard(request: HttpRequest) -> HttpResponse:
    if logic.admin_exists():
        return _already_set_up(request)
    if request.method != "POST":
        return _page(request, "wizard.html", form=SetupForm())
    form = SetupForm(request.POST)
    if form.is_valid():
        try:
            result = logic.initialize_site(**form.setup_values())
        except logic.SetupRefused:
            return _already_set_up(request)
        except ValidationError as exc:
            form.add_model_errors(exc)
        else:
            login(request, result.admin, backend=_BACKEND)
            return _page(request, "done.html", result=result)
    return _page(request, "wizard.html", status=400, form=form)


def home(request: HttpRequest) -> HttpResponse:
    """The console root: the wizard until an admin exists, then the console."""
    return redirect("setup" if not logic.admin_exists() else "admin:index")
