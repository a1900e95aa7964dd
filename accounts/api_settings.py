"""`/api/settings`: the operator settings changed at runtime (accounts/runtime.py).

A change applies on every process within about a second, without a restart. Secret
settings (a webhook URL with a token) are write-only: they come back as scheme://host/….
"""

from datetime import datetime
from typing import Any, Literal

from django.http import HttpRequest, HttpResponse
from ninja import Router, Schema
from ninja.errors import HttpError
from pydantic import ConfigDict, Field, StrictBool, StrictInt, StrictStr, create_model

from accounts import runtime
from accounts.access import Denied, Rights
from thinkwatch.guard import needs

router = Router(tags=["settings"])

Value = StrictBool | StrictInt | StrictStr | list[StrictStr]
_KINDS: dict[type, Any] = {bool: StrictBool, int: StrictInt, str: StrictStr, list: list[StrictStr]}
_SHOWN = "For a secret setting: only scheme://host/… (or … when it is set but not a URL)."


class SettingOut(Schema):
    key: str
    category: str
    label: str
    help: str
    kind: Literal["bool", "int", "str", "list"]
    secret: bool = Field(description="Write-only: value and default are shown in part.")
    minimum: int | None
    maximum: int | None
    choices: list[str] | None
    value: Value = Field(description=f"The value in force. {_SHOWN}")
    default: Value = Field(
        description=f"The value without a change (from the environment). {_SHOWN}"
    )
    is_default: bool = Field(description="No one has changed it: the default applies.")
    updated_at: datetime | None
    updated_by: str | None = Field(description="Who changed it last (their username).")


def _out(entry: runtime.Entry) -> dict[str, Any]:
    spec = entry.spec
    return {
        "key": spec.key,
        "category": spec.category,
        "label": spec.label,
        "help": spec.help,
        "kind": spec.kind.__name__,
        "secret": spec.secret,
        "minimum": spec.minimum,
        "maximum": spec.maximum,
        "choices": list(spec.choices) if spec.choices is not None else None,
        "value": entry.value,
        "default": entry.default,
        "is_default": entry.is_default,
        "updated_at": entry.updated_at,
        "updated_by": entry.updated_by,
    }


def _documented(spec: runtime.Spec) -> Any:
    """The field's JSON schema: its limits, and no `default` (omitted means unchanged)."""

    def amend(schema: dict[str, Any]) -> None:
        schema.pop("default", None)
        if spec.minimum is not None:
            schema["minimum"] = spec.minimum
        if spec.maximum is not None:
            schema["maximum"] = spec.maximum
        if spec.choices is not None:
            schema["enum"] = list(spec.choices)
        if spec.secret:
            schema["writeOnly"] = True

    return amend


class _PatchBase(Schema):
    model_config = ConfigDict(extra="forbid")


# One optional field per setting, named by its key. Types are checked here; limits, choices
# and each setting's own rules by the registry, which reports every problem at once.
_FIELDS: dict[str, Any] = {
    spec.key.replace(".", "__"): (
        _KINDS[spec.kind],
        Field(
            None,
            alias=spec.key,
            title=spec.label,
            description=spec.help,
            json_schema_extra=_documented(spec),
        ),
    )
    for spec in runtime.SPECS
}
SettingsPatch = create_model("SettingsPatch", __base__=_PatchBase, **_FIELDS)


def _settings() -> list[dict[str, Any]]:
    return [_out(entry) for entry in runtime.describe()]


@router.get("", response=list[SettingOut])
def list_settings(request: HttpRequest) -> list[dict[str, Any]]:
    """Every setting with its value in force and whether, when and by whom it was changed.

    Needs `settings:read` (or `settings:update`)."""
    rights = Rights.of(request.user)
    if not (rights.has("settings:read") or rights.has("settings:update")):
        raise Denied("You need the settings:read permission.")
    return _settings()


@router.patch("", response=list[SettingOut])
@needs("settings:update")
def update_settings(request: HttpRequest, payload: SettingsPatch) -> list[dict[str, Any]]:  # type: ignore[valid-type]
    """Change the settings given, all or none (422 with a message per invalid setting)."""
    changes = payload.model_dump(exclude_unset=True, by_alias=True)  # type: ignore[attr-defined]
    runtime.update(changes, by=request.user)
    return _settings()


@router.delete("/{key}", response=SettingOut)
@needs("settings:update")
def reset_setting(request: HttpRequest, key: str) -> dict[str, Any] | HttpResponse:
    """Put a setting back to its default (the environment's value, or the built-in one)."""
    if key not in runtime.REGISTRY:
        raise HttpError(404, f"There is no setting {key!r}; GET /api/settings lists them.")
    runtime.reset(key, by=request.user)
    return next(entry for entry in _settings() if entry["key"] == key)
