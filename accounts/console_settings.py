"""The console's settings page: every runtime setting (accounts/runtime.py) by category.

`settings:read` shows it; `settings:update` edits it. A save is all or nothing, like the
API's PATCH; "Reset to default" deletes the setting's stored value.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from accounts import runtime
from accounts.access import Rights


def _field(spec: runtime.Spec) -> forms.Field:
    options: dict[str, Any] = {"label": spec.label, "help_text": spec.help}
    if spec.kind is bool:
        return forms.BooleanField(required=False, **options)
    if spec.kind is int:
        # The setting's own rules check the limits, and only of a changed value.
        limits = {"min": spec.minimum, "max": spec.maximum}
        number = forms.NumberInput(attrs={k: v for k, v in limits.items() if v is not None})
        return forms.IntegerField(widget=number, **options)
    if spec.kind is list:
        textarea = forms.Textarea(attrs={"rows": 4, "cols": 60})
        return forms.CharField(required=False, widget=textarea, **options)
    if spec.choices is not None:
        choices = [(choice, choice or "(none)") for choice in spec.choices]
        return forms.ChoiceField(required=False, choices=choices, **options)
    if spec.secret:
        hidden = forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"})
        options["help_text"] = f"{spec.help} Leave empty to keep the current value."
        return forms.CharField(required=False, widget=hidden, **options)
    return forms.CharField(required=False, widget=forms.TextInput(attrs={"size": 60}), **options)


def _clear_name(key: str) -> str:
    return f"{key}:clear"


def _initial(spec: runtime.Spec, value: Any) -> Any:
    return "\n".join(value) if spec.kind is list else value


def _shown(spec: runtime.Spec, value: Any) -> str:
    if spec.kind is bool:
        return "on" if value else "off"
    if spec.kind is list:
        return ", ".join(value) or "(none)"
    return str(value) if value != "" else "(empty)"


class SettingsForm(forms.Form):
    """One field per setting; a secret one is never shown and has a "clear" box."""

    def __init__(self, entries: list[runtime.Entry], *args: Any, editable: bool, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.entries = entries
        self.changes: dict[str, Any] = {}
        for entry in entries:
            spec = entry.spec
            field = _field(spec)
            field.disabled = not editable
            if not spec.secret:
                field.initial = _initial(spec, entry.value)
            self.fields[spec.key] = field
            if spec.secret:
                self.fields[_clear_name(spec.key)] = forms.BooleanField(
                    required=False, label="Clear", disabled=not editable
                )

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        for entry in self.entries:
            spec = entry.spec
            if spec.key not in data:
                continue  # the field's own check failed and says so
            value = self._typed(spec, data)
            if value is None or (not spec.secret and value == entry.value):
                continue  # unchanged: not checked again (the environment may start one beyond)
            try:
                self.changes[spec.key] = spec.clean(value)
            except ValidationError as exc:
                prefix = f"{spec.key}: "
                self.add_error(spec.key, [m.removeprefix(prefix) for m in exc.messages])
        return data

    def _typed(self, spec: runtime.Spec, data: dict[str, Any]) -> Any:
        """The value the form asks for, or None to leave the setting as it is."""
        value = data[spec.key]
        if spec.secret:
            if data.get(_clear_name(spec.key)):
                return ""
            return value or None
        if spec.kind is list:
            return [line.strip() for line in value.splitlines() if line.strip()]
        return value


def _rows(form: SettingsForm) -> list[tuple[str, list[dict[str, Any]]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for entry in form.entries:
        spec = entry.spec
        groups.setdefault(spec.category, []).append(
            {
                "entry": entry,
                "field": form[spec.key],
                "clear": form[_clear_name(spec.key)] if spec.secret else None,
                "checkbox": spec.kind is bool,
                "value": _shown(spec, entry.value),
                "default": _shown(spec, entry.default),
            }
        )
    return list(groups.items())


def settings_page(request: HttpRequest) -> HttpResponse:
    rights = Rights.of(request.user)
    editable = rights.has("settings:update")
    if not (editable or rights.has("settings:read")):
        raise PermissionDenied("You need the settings:read permission.")
    if request.method == "POST" and not editable:
        raise PermissionDenied("You need the settings:update permission.")
    here = reverse("console-settings")
    if request.method == "POST" and "reset" in request.POST:
        return _reset(request, request.POST["reset"], here)
    form = SettingsForm(runtime.describe(), request.POST or None, editable=editable)
    if request.method == "POST" and form.is_valid():
        try:
            runtime.update(form.changes, by=request.user)
        except ValidationError as exc:  # a rule that depends on other data changed meanwhile
            for key, problems in exc.message_dict.items():
                form.add_error(key if key in form.fields else None, problems)
        else:
            labels = [runtime.REGISTRY[key].label for key in form.changes]
            if labels:
                messages.success(request, f"Saved: {', '.join(labels)}.")
            else:
                messages.info(request, "Nothing changed.")
            return HttpResponseRedirect(here)
    context = {
        **admin.site.each_context(request),
        "title": "Settings",
        "form": form,
        "groups": _rows(form),
        "editable": editable,
    }
    return TemplateResponse(request, "console/settings.html", context)


def _reset(request: HttpRequest, key: str, here: str) -> HttpResponse:
    spec = runtime.REGISTRY.get(key)
    if spec is None:
        raise Http404("There is no such setting.")
    if runtime.reset(key, by=request.user):
        messages.success(request, f"{spec.label}: back to the default.")
    else:
        messages.info(request, f"{spec.label} was already at its default.")
    return HttpResponseRedirect(here)
