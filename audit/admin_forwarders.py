"""The console pages of SIEM forwarding: forwarders (seeing them needs settings:read,
adding, changing and deleting them settings:update) and the outbox of batches that could
not be delivered, which settings:update may retry at once or discard.

The webhook secret is write-only: typed in a password field, stored encrypted, never
rendered back (the page says only whether one is stored). The outbox pages never show a
batch's records: they may hold MCP arguments and other content that needs log rights to
read; only where the batch stands in its family's chain.
"""

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.db import transaction
from django.db.models import QuerySet, Sum
from django.http import HttpRequest
from django.utils import timezone

from audit import context
from audit.chain import FAMILIES
from audit.context import Origin
from audit.models import AuditEvent, Forwarder, ForwardOutbox, Via
from audit.redaction import scrub
from thinkwatch.console import Governed


class ForwarderForm(forms.ModelForm):
    families = forms.MultipleChoiceField(
        choices=[(family, family) for family in FAMILIES],
        widget=forms.CheckboxSelectMultiple,
        help_text="gateway: AI gateway requests; mcp: MCP calls; admin: the admin audit "
        "log; access: every HTTP request on both ports.",
    )
    new_secret = forms.CharField(
        label="Webhook secret",
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text="The HMAC-SHA256 key of X-ThinkWatch-Signature. Write-only: stored "
        "encrypted, never shown. Leave empty to keep the current one.",
    )
    from_beginning = forms.BooleanField(
        label="Send the records already stored",
        required=False,
        help_text="Off: only records written from now on. On: every record still kept, "
        "oldest first (a SIEM may get a great many at once).",
    )

    class Meta:
        model = Forwarder
        fields = ["name", "type", "enabled", "families", "destination", "topic", "facility"]

    def clean(self) -> dict[str, Any]:
        # Before the model's checks, which must see a secret typed in this form.
        data = super().clean() or {}
        if data.get("new_secret"):
            self.instance.set_secret(data["new_secret"])
        return data

    def _update_errors(self, errors: Any) -> None:
        # The model names the stored field; this form's field for it is new_secret.
        if hasattr(errors, "error_dict") and "secret" in errors.error_dict:
            errors.error_dict["new_secret"] = errors.error_dict.pop("secret")
        super()._update_errors(errors)  # type: ignore[misc]


# Forwarding is part of the installation's settings: settings:read to see it,
# settings:update for everything else (there is no settings:create or settings:delete).
SETTINGS_RIGHTS = {"view": "read", "add": "update", "change": "update", "delete": "update"}


@admin.register(Forwarder)
class ForwarderAdmin(Governed, admin.ModelAdmin):
    area = "settings"
    actions_map = SETTINGS_RIGHTS
    form = ForwarderForm
    list_display = [
        "name",
        "type",
        "family_list",
        "shown_destination",
        "enabled",
        "status",
        "outbox_waiting",
        "failures_total",
        "last_success_at",
    ]
    list_filter = ["type", "enabled"]
    search_fields = ["name"]
    readonly_fields = [
        "secret_stored",
        "status",
        "last_success_at",
        "last_error",
        "last_error_at",
        "forwarded_total",
        "failures_total",
        "positions",
        "outbox_waiting",
    ]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        sets: list[Any] = [
            (None, {"fields": ["name", "type", "enabled", "families"]}),
            ("Destination", {"fields": ["destination", "topic", "facility"]}),
            ("Webhook signing (write-only)", {"fields": ["secret_stored", "new_secret"]}),
        ]
        if obj is None:
            return [*sets, ("History", {"fields": ["from_beginning"]})]
        status = [
            "status",
            "last_success_at",
            "last_error",
            "last_error_at",
            "forwarded_total",
            "failures_total",
            "positions",
            "outbox_waiting",
        ]
        return [*sets, ("Status", {"fields": status})]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        return super().get_queryset(request).annotate(waiting=Sum("outbox__count"))

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        from audit.forwarding.jobs import sync_cursors

        # A change saves what the form edits, never the job's state written meanwhile.
        obj.save(update_fields=[*Forwarder.CONFIG_FIELDS, "secret"] if change else None)
        sync_cursors(obj, from_beginning=not change and form.cleaned_data.get("from_beginning"))
        if change:
            # An admin who just fixed the destination should not wait out a pause.
            Forwarder.objects.filter(pk=obj.pk).update(paused_until=None)

    @admin.display(description="families")
    def family_list(self, forwarder: Forwarder) -> str:
        return ", ".join(forwarder.families)

    @admin.display(description="destination")
    def shown_destination(self, forwarder: Forwarder) -> str:
        where = scrub(forwarder.destination)
        return f"{where} → {forwarder.topic}" if forwarder.topic else str(where)

    @admin.display(boolean=True, description="secret stored")
    def secret_stored(self, forwarder: Forwarder) -> bool:
        return forwarder.has_secret

    @admin.display(description="status")
    def status(self, forwarder: Forwarder) -> str:
        if not forwarder.enabled:
            return "Disabled"
        failing = forwarder.last_error_at is not None and (
            forwarder.last_success_at is None or forwarder.last_error_at > forwarder.last_success_at
        )
        if failing:
            paused = forwarder.paused_until
            if paused is not None and paused > timezone.now():
                return (
                    f"Failing, new records wait until {paused:%H:%M:%S} UTC: {forwarder.last_error}"
                )
            return f"Failing: {forwarder.last_error}"
        if forwarder.last_success_at is not None:
            return "OK"
        return "Nothing sent yet"

    @admin.display(description="sent up to")
    def positions(self, forwarder: Forwarder) -> str:
        cursors = forwarder.cursors.order_by("family").values_list("family", "seq")
        return ", ".join(f"{family} #{seq}" for family, seq in cursors) or "-"

    @admin.display(description="records in the outbox")
    def outbox_waiting(self, forwarder: Forwarder) -> int:
        waiting = getattr(forwarder, "waiting", None)
        if waiting is None:
            waiting = forwarder.outbox.aggregate(n=Sum("count"))["n"]
        return int(waiting or 0)


@admin.register(ForwardOutbox)
class ForwardOutboxAdmin(Governed, admin.ModelAdmin):
    area = "settings"
    actions_map = SETTINGS_RIGHTS
    list_display = [
        "created_at",
        "forwarder",
        "family",
        "first_seq",
        "last_seq",
        "count",
        "attempts",
        "next_attempt_at",
        "last_error",
    ]
    list_filter = ["forwarder", "family"]
    list_select_related = ["forwarder"]
    # Never the payload: see the module's docstring.
    readonly_fields = (
        "forwarder",
        "family",
        "first_seq",
        "last_seq",
        "count",
        "batch_id",
        "attempts",
        "next_attempt_at",
        "last_error",
        "created_at",
    )
    fields = readonly_fields
    actions = ["retry_now", "discard"]

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # "discard" does it, and records who did

    def has_manage_permission(self, request: HttpRequest) -> bool:
        return self.may(request, "change")

    @admin.action(description="Retry the selected entries now", permissions=["manage"])
    def retry_now(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        from audit.forwarding.tasks import retry_outbox

        count = queryset.update(next_attempt_at=timezone.now())
        retry_outbox.delay()
        messages.info(
            request,
            f"{count} outbox entries will be retried within seconds; entries that go "
            "through leave this list.",
        )

    @admin.action(description="Discard the selected entries", permissions=["manage"])
    def discard(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        origin = context.current() or Origin(via=Via.CONSOLE, request=request)
        entries = list(queryset.select_related("forwarder"))
        with transaction.atomic():
            for entry in entries:
                AuditEvent.objects.create(
                    action="forward.discard",
                    object_type="audit.forwardoutbox",
                    object_id=str(entry.pk),
                    object_repr=f"{entry.forwarder.name}: {entry}"[:200],
                    detail={
                        "forwarder": entry.forwarder.name,
                        "family": entry.family,
                        "first_seq": entry.first_seq,
                        "last_seq": entry.last_seq,
                        "records": entry.count,
                        "attempts": entry.attempts,
                        "last_error": entry.last_error,
                    },
                    **origin.fields(),
                )
                entry.delete()
        messages.warning(
            request,
            f"{len(entries)} outbox entries discarded: their records will not be forwarded "
            "(they are still in the store).",
        )
