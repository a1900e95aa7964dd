"""The admin audit log: every change to the installation's configuration, and sign-ins.

Model signals on every audited model record one AuditEvent per change — who (user, or the
key they used), what (create, update, delete, or a named action such as key.revoke), the
object, the changed fields before and after with secrets redacted, from where — but only
while audit.context holds an origin: a console or API request, or a command that set one.
The event is written in the same transaction as the change, so a change that is rolled
back leaves no event, and one that is committed always has one.

Audited: Django's User, the models named in AUDITED_MODELS, and every model of
AUDITED_APPS but the records and derived state in NOT_AUDITED, so a model added to those
apps is covered without further work. Bulk queryset operations (update(), bulk_create())
send no model signals and are not recorded; the console and the API change objects one at
a time.
"""

import datetime
import uuid
from decimal import Decimal
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db import models
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_save
from django.http import HttpRequest

from audit import context
from audit.context import Origin
from audit.models import AuditEvent
from audit.redaction import redact

AUDITED_APPS = ("accounts", "providers", "quotas", "mcpgw")
NOT_AUDITED = frozenset(
    {
        "accounts.rolerevision",  # the role history itself, written with each role change
        "accounts.teamuserobjectpermission",  # derived from role assignments (access.sync)
        "accounts.keyexpirywarning",  # bookkeeping of the expiry job (key.expiry_warning)
        "quotas.budgetalert",  # evidence, written by the gateway
        "quotas.quotareset",  # recorded by quotas.logic as its own quota.reset event
        "mcpgw.mcpoauthstate",  # an authorization flow in progress, gone at its callback
    }
)
# Configuration kept in an app of records (audit): named one by one.
AUDITED_MODELS = ("audit.forwarder", "gateway.guardrailrule", "gateway.cachepolicy")
# Derived from role assignments by accounts.access.sync; the assignments are recorded.
NOT_AUDITED_RELATIONS = frozenset({"auth.user.user_permissions"})
# Bookkeeping that changes without anyone changing configuration.
_BOOKKEEPING = frozenset({"last_login", "last_used_at"})


def audited_models() -> list[type[models.Model]]:
    found: list[type[models.Model]] = [get_user_model()]
    for label in AUDITED_APPS:
        found += [
            model
            for model in apps.get_app_config(label).get_models()
            if model._meta.label_lower not in NOT_AUDITED
        ]
    found += [apps.get_model(label) for label in AUDITED_MODELS]
    return found


def connect() -> None:
    for model in audited_models():
        uid = f"audit.changes.{model._meta.label_lower}"
        pre_save.connect(_before_save, sender=model, dispatch_uid=f"{uid}.pre_save")
        post_save.connect(_saved, sender=model, dispatch_uid=f"{uid}.post_save")
        post_delete.connect(_deleted, sender=model, dispatch_uid=f"{uid}.post_delete")
        for field in model._meta.local_many_to_many:
            if f"{model._meta.label_lower}.{field.name}" in NOT_AUDITED_RELATIONS:
                continue
            through = field.remote_field.through
            m2m_changed.connect(_m2m_changed, sender=through, dispatch_uid=f"{uid}.{field.name}")
    user_logged_in.connect(_signed_in, dispatch_uid="audit.changes.sign_in")
    user_logged_out.connect(_signed_out, dispatch_uid="audit.changes.sign_out")
    user_login_failed.connect(_sign_in_failed, dispatch_uid="audit.changes.sign_in_failed")


# --- model changes ------------------------------------------------------------------------


def _fields(model: type[models.Model], update_fields: Any = None) -> list["models.Field[Any, Any]"]:
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    if update_fields is not None:
        fields = [f for f in fields if f.name in update_fields or f.attname in update_fields]
    return fields


def _before_save(
    sender: type[models.Model],
    instance: models.Model,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    if raw or context.current() is None:
        return
    instance.__dict__["_audit_before"] = None
    if instance._state.adding or instance.pk is None:
        return
    fields = _fields(sender, update_fields)
    row = (
        sender._base_manager.using(using)
        .filter(pk=instance.pk)
        .values(*(f.attname for f in fields))
        .first()
    )
    if row is not None:
        instance.__dict__["_audit_before"] = {f.name: row[f.attname] for f in fields}


def _saved(
    sender: type[models.Model],
    instance: models.Model,
    created: bool,
    raw: bool = False,
    using: str | None = None,
    update_fields: Any = None,
    **kwargs: Any,
) -> None:
    origin = context.current()
    if raw or origin is None:
        return
    before = instance.__dict__.pop("_audit_before", None)
    fields = _fields(sender, update_fields)
    after = {f.name: f.value_from_object(instance) for f in fields}
    if created or before is None:
        _record(origin, "create", instance, {}, after, using)
        return
    changed = [
        f.name
        for f in fields
        if f.name not in _BOOKKEEPING
        and not getattr(f, "auto_now", False)
        and not _same(f, before[f.name], after[f.name])
    ]
    if changed:
        old = {name: before[name] for name in changed}
        _record(origin, "update", instance, old, {name: after[name] for name in changed}, using)


def _deleted(
    sender: type[models.Model], instance: models.Model, using: str | None = None, **kwargs: Any
) -> None:
    origin = context.current()
    if origin is None:
        return
    before = {f.name: f.value_from_object(instance) for f in _fields(sender)}
    _record(origin, "delete", instance, before, {}, using)


def _m2m_changed(
    sender: type[models.Model],
    instance: models.Model,
    action: str,
    reverse: bool,
    using: str | None = None,
    **kwargs: Any,
) -> None:
    origin = context.current()
    if origin is None:
        return
    name = _accessor(type(instance), sender, reverse)
    if name is None:
        return
    held = instance.__dict__.setdefault("_audit_m2m", {})
    if action.startswith("pre_"):
        held[name] = _related_ids(instance, name)
        return
    before = held.pop(name, None)
    after = _related_ids(instance, name)
    if before is not None and before != after:
        _record(origin, "update", instance, {name: before}, {name: after}, using)


def _accessor(model: type[models.Model], through: type[models.Model], reverse: bool) -> str | None:
    if not reverse:
        for field in model._meta.many_to_many:
            if field.remote_field.through is through:
                return field.name
        return None
    for rel in model._meta.related_objects:
        if rel.many_to_many and rel.through is through:  # type: ignore[attr-defined]
            return rel.get_accessor_name()
    return None


def _related_ids(instance: models.Model, accessor: str) -> list[Any]:
    return sorted(getattr(instance, accessor).values_list("pk", flat=True))


def _same(field: "models.Field[Any, Any]", old: Any, new: Any) -> bool:
    try:
        return bool(field.to_python(old) == field.to_python(new))
    except (ValidationError, TypeError, ValueError):
        return bool(old == new)


def _record(
    origin: Origin,
    kind: str,
    instance: models.Model,
    before: dict[str, Any],
    after: dict[str, Any],
    using: str | None,
) -> None:
    label = instance._meta.label_lower
    AuditEvent.objects.using(using).create(
        action=_named_action(label, kind, before, after) or kind,
        object_type=label,
        object_id=str(instance.pk)[:200],
        object_repr=_repr(instance),
        before=redact(instance, {k: _jsonable(v) for k, v in before.items()}),
        after=redact(instance, {k: _jsonable(v) for k, v in after.items()}),
        **origin.fields(),
    )


def _named_action(label: str, kind: str, before: dict[str, Any], after: dict[str, Any]) -> str:
    """The name of a change that means more than an edit of fields."""
    if label == "accounts.roleassignment":
        return {"create": "role.assign", "delete": "role.unassign"}.get(kind, "")
    if label == "accounts.apikey" and kind == "update":
        if before.get("revoked_at") is None and after.get("revoked_at") is not None:
            return "key.revoke"
        if before.get("grace_ends_at") is None and after.get("grace_ends_at") is not None:
            return "key.rotate"
    return ""


def _repr(instance: models.Model) -> str:
    try:
        return str(instance)[:200]
    except ObjectDoesNotExist:  # a relation the text names went first (a cascade)
        return f"{instance._meta.verbose_name} {instance.pk}"[:200]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | memoryview):
        return "[binary]"
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


# --- sign-in ------------------------------------------------------------------------------


def _signed_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    _sign_in_event("auth.sign_in", request, user)


def _signed_out(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    if user is not None:
        _sign_in_event("auth.sign_out", request, user)


def _sign_in_failed(
    sender: Any, credentials: dict[str, Any], request: HttpRequest | None = None, **kwargs: Any
) -> None:
    if request is None:
        return  # not a sign-in form (a script calling authenticate())
    tried = str(credentials.get("username", ""))[:200]
    fields = Origin(via=context.via_of(request), request=request).fields()
    fields["actor"] = tried
    AuditEvent.objects.create(
        action="auth.sign_in_failed", object_type="auth.user", object_repr=tried, **fields
    )


def _sign_in_event(action: str, request: HttpRequest | None, user: Any) -> None:
    if request is None:
        return
    origin = Origin(via=context.via_of(request), request=request, user=user)
    AuditEvent.objects.create(
        action=action,
        object_type=user._meta.label_lower,
        object_id=str(user.pk),
        object_repr=context.display_name(user)[:200],
        **origin.fields(),
    )
