import os
import secrets
from itertools import count
from typing import Any

from django.db import models, transaction
from django.utils import timezone

_UID_PREFIX = secrets.token_hex(8)
_uid_counter = count(1)


def new_uid() -> str:
    """An identity for a record, unique across processes and restarts: 64 random bits per
    process, then a counter (cheaper than uuid4 on the gateway's path)."""
    return f"{_UID_PREFIX}{next(_uid_counter):016x}"


def reseed_uids() -> None:
    """A forked child must not repeat its parent's identities."""
    global _UID_PREFIX
    _UID_PREFIX = secrets.token_hex(8)


os.register_at_fork(after_in_child=reseed_uids)


class Chained(models.Model):
    """What every log family carries for lossless delivery and tamper evidence.

    `uid` is given when the record is accepted (the durable buffer's identity: a batch
    delivered twice is recognised), `seq` and `chain_hash` when it is written (audit/chain.py).
    Rows written before the chain existed have neither.
    """

    uid = models.CharField(max_length=32, blank=True, db_index=True, editable=False)
    seq = models.BigIntegerField(null=True, unique=True, editable=False)
    chain_hash = models.CharField(max_length=64, blank=True, editable=False)

    class Meta:
        abstract = True


class ChainHead(models.Model):
    """Each log family's last sequence number and link, locked by the writer that extends
    the chain; and the anchor retention leaves: the last purged record's seq and link."""

    family = models.CharField(max_length=16, primary_key=True)
    seq = models.BigIntegerField(default=0)
    hash = models.CharField(max_length=64, blank=True)
    anchor_seq = models.BigIntegerField(default=0)
    anchor_hash = models.CharField(max_length=64, blank=True)

    def __str__(self) -> str:
        return f"{self.family} @ {self.seq}"


class GatewayLog(Chained):
    """One row per request the AI gateway answered, whatever the outcome.

    Users, teams, keys and providers are referenced by id without foreign keys: the trail
    must outlive what it mentions (keys are purged, users deleted).
    """

    request_id = models.CharField(max_length=128, db_index=True)
    created_at = models.DateTimeField()
    user_id = models.BigIntegerField(null=True)
    team_id = models.BigIntegerField(null=True)
    api_key_id = models.BigIntegerField(null=True)
    api_key_prefix = models.CharField(max_length=16, blank=True)
    surface = models.CharField(max_length=16)
    ingress = models.CharField(max_length=32)
    model = models.CharField(max_length=200, blank=True)
    provider_id = models.BigIntegerField(null=True)
    provider = models.CharField(max_length=100, blank=True)
    upstream_model = models.CharField(max_length=200, blank=True)
    streamed = models.BooleanField(default=False)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    cached_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    weighted_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(max_digits=20, decimal_places=10, default=0)
    latency_ms = models.FloatField(default=0)
    ttft_ms = models.FloatField(null=True)
    status_code = models.PositiveSmallIntegerField()
    error_code = models.CharField(max_length=64, blank=True)
    error_message = models.TextField(blank=True)
    client_ip = models.GenericIPAddressField(null=True)
    user_agent = models.CharField(max_length=512, blank=True)
    disconnected = models.BooleanField(default=False)
    # True when the provider's usage never arrived (the client left mid-stream) and the
    # token counts were estimated from what was seen.
    usage_estimated = models.BooleanField(default=False)
    # How the request was routed (gateway/routing.py): the strategy, each attempt (route,
    # provider, why it was chosen, its outcome, its time) and the routes skipped.
    routing = models.JSONField(null=True, blank=True)
    # Content-policy rules that fired on the request (gateway/guardrails.py): each rule's
    # name, id, action and match count, never the matched text.
    guardrails = models.JSONField(null=True, blank=True)
    # Personal data replaced before egress (gateway/redaction.py): how many values of each
    # kind, e.g. {"EMAIL": 2}; never the values.
    redactions = models.JSONField(null=True, blank=True)
    # The response cache (gateway/cache.py): {"status": "hit"|"miss"|"bypass", and on a hit
    # "saved_usd", the upstream cost the cached answer saved}.
    cache = models.JSONField(null=True, blank=True)
    # Captured bodies (audit/bodies.py): NULL when capture was off. Redacted before they
    # were written anywhere; `body_redactions` counts what was replaced, by kind. Bodies
    # above the inline cap live in S3-compatible storage at `body_ref`, whose content has
    # the SHA-256 `body_sha256` (covered by the chain like every column).
    request_body = models.TextField(null=True, blank=True)  # noqa: DJ001 (NULL: not captured)
    response_body = models.TextField(null=True, blank=True)  # noqa: DJ001
    body_truncated = models.BooleanField(null=True)
    body_redactions = models.JSONField(null=True, blank=True)
    body_ref = models.CharField(max_length=300, null=True, blank=True)  # noqa: DJ001
    body_sha256 = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "gateway log record"
        # Each ends in (created_at, id): the log explorer pages by that key, newest first,
        # and a filter on the leading column still reads the rows already in that order.
        # Spend per user, team, key or model since a date (quotas) uses them as well.
        indexes = [
            models.Index(fields=["created_at", "id"], name="gwlog_created"),
            models.Index(fields=["user_id", "created_at", "id"], name="gwlog_user_created"),
            models.Index(fields=["team_id", "created_at", "id"], name="gwlog_team_created"),
            models.Index(fields=["api_key_id", "created_at", "id"], name="gwlog_key_created"),
            models.Index(fields=["model", "created_at", "id"], name="gwlog_model_created"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.model} {self.status_code}"


class Via(models.TextChoices):
    CONSOLE = "console"
    API = "api", "management API"
    COMMAND = "command", "management command"


class AuditEvent(Chained):
    """Something that happened to the installation: a change made by an admin (with the
    values before and after, secrets redacted: audit/changes.py), a sign-in, a budget
    crossing a threshold, counters being reset."""

    created_at = models.DateTimeField(default=timezone.now)
    # create, update, delete, or a named action: key.revoke, role.assign, auth.sign_in, ...
    action = models.CharField(max_length=64, db_index=True)
    actor_id = models.BigIntegerField(null=True)  # the user, when one acted
    actor = models.CharField(max_length=254, blank=True)  # a readable name, kept if the user goes
    api_key_prefix = models.CharField(max_length=16, blank=True)  # when the actor used a key
    object_type = models.CharField(max_length=64, blank=True)  # app_label.model for changes
    object_id = models.CharField(max_length=200, blank=True)
    object_repr = models.CharField(max_length=200, blank=True)
    before = models.JSONField(null=True, blank=True)  # changed fields only, for an update
    after = models.JSONField(null=True, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    client_ip = models.GenericIPAddressField(null=True)
    user_agent = models.CharField(max_length=512, blank=True)
    via = models.CharField(max_length=16, choices=Via.choices, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_at", "id"], name="auditevent_created"),
            models.Index(fields=["actor_id", "created_at", "id"], name="auditevent_actor_created"),
            models.Index(fields=["object_type", "object_id"], name="auditevent_object"),
        ]

    def __str__(self) -> str:
        return f"{self.action} {self.object_type}:{self.object_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """A new event is sealed into the admin chain in the transaction that writes it
        (and, inside an admin's change, the change's own transaction): an event exists
        only with its link, and a change rolled back leaves no event."""
        if not self._state.adding or self.seq is not None:
            super().save(*args, **kwargs)
            return
        from audit import chain

        with transaction.atomic(using=kwargs.get("using")):
            self.created_at = self.created_at or timezone.now()
            self.uid = self.uid or new_uid()
            head = chain.locked_head("admin")
            record = {f.attname: getattr(self, f.attname) for f in self._meta.concrete_fields}
            chain.seal(head, "admin", [record])
            self.seq, self.chain_hash = record["seq"], record["chain_hash"]
            super().save(*args, **kwargs)
            head.save()


class McpLog(Chained):
    """One row per MCP request that reached a tool, resource or prompt (or was refused on
    the way): `tools/call` always, and the reads that name one server's item."""

    request_id = models.CharField(max_length=128, db_index=True)
    created_at = models.DateTimeField()
    user_id = models.BigIntegerField(null=True)
    team_id = models.BigIntegerField(null=True)
    api_key_id = models.BigIntegerField(null=True, db_index=True)
    api_key_prefix = models.CharField(max_length=16, blank=True)
    session_id = models.CharField(max_length=64, blank=True, db_index=True)
    protocol_version = models.CharField(max_length=16, blank=True)
    method = models.CharField(max_length=40)
    server_id = models.BigIntegerField(null=True, db_index=True)
    server = models.CharField(max_length=100, blank=True)
    name = models.CharField(max_length=300, blank=True, db_index=True)  # tool/prompt/URI as called
    upstream_name = models.CharField(max_length=300, blank=True)
    arguments = models.JSONField(null=True, blank=True)  # secrets redacted
    status = models.CharField(max_length=20)
    error_code = models.IntegerField(null=True)
    error_message = models.TextField(blank=True)
    latency_ms = models.FloatField(default=0)
    client_ip = models.GenericIPAddressField(null=True)
    user_agent = models.CharField(max_length=512, blank=True)
    # Captured bodies, as on GatewayLog: the result (JSON text) beside `arguments`, which
    # body capture also redacts for personal data.
    result = models.TextField(null=True, blank=True)  # noqa: DJ001 (NULL: not captured)
    body_truncated = models.BooleanField(null=True)
    body_redactions = models.JSONField(null=True, blank=True)
    body_ref = models.CharField(max_length=300, null=True, blank=True)  # noqa: DJ001
    body_sha256 = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "MCP log record"
        # As for GatewayLog: the explorer's keyset (created_at, id) behind each filter.
        indexes = [
            models.Index(fields=["created_at", "id"], name="mcplog_created"),
            models.Index(fields=["user_id", "created_at", "id"], name="mcplog_user_created"),
            models.Index(fields=["team_id", "created_at", "id"], name="mcplog_team_created"),
            models.Index(fields=["status", "created_at", "id"], name="mcplog_status_created"),
        ]

    def __str__(self) -> str:
        return f"{self.request_id} {self.method} {self.name} {self.status}"


class AccessLog(Chained):
    """One row per HTTP request on either port: who asked for what and how it went."""

    created_at = models.DateTimeField()
    port = models.CharField(max_length=8)  # gateway, console
    method = models.CharField(max_length=8)
    path = models.CharField(max_length=2000)
    status_code = models.PositiveSmallIntegerField()
    latency_ms = models.FloatField(default=0)
    client_ip = models.GenericIPAddressField(null=True)
    user_agent = models.CharField(max_length=512, blank=True)
    user_id = models.BigIntegerField(null=True)
    request_id = models.CharField(max_length=128, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "access log record"
        indexes = [models.Index(fields=["created_at", "id"], name="accesslog_created")]

    def __str__(self) -> str:
        return f"{self.method} {self.path} {self.status_code}"


# --- forwarding to SIEMs (audit/forwarding/) ------------------------------------------------


class ForwarderType(models.TextChoices):
    SYSLOG_UDP = "syslog_udp", "syslog (RFC 5424) over UDP"
    SYSLOG_TCP = "syslog_tcp", "syslog (RFC 5424) over TCP"
    WEBHOOK = "webhook", "HTTP webhook (HMAC-signed)"
    KAFKA = "kafka", "Kafka"


class Facility(models.IntegerChoices):
    """Syslog facilities (RFC 5424 §6.2.1) a SIEM may sort by; the local ones are usual."""

    USER = 1, "user"
    AUTH = 4, "auth"
    AUTHPRIV = 10, "authpriv"
    LOG_AUDIT = 13, "log audit"
    LOCAL0 = 16, "local0"
    LOCAL1 = 17, "local1"
    LOCAL2 = 18, "local2"
    LOCAL3 = 19, "local3"
    LOCAL4 = 20, "local4"
    LOCAL5 = 21, "local5"
    LOCAL6 = 22, "local6"
    LOCAL7 = 23, "local7"


FORWARDER_SECRET_PURPOSE = "audit.Forwarder.secret"  # noqa: S105 (a label, not a secret)


class Forwarder(models.Model):
    """Where copies of log records go: one SIEM destination and the families it receives.

    What an admin configures is `CONFIG_FIELDS`; the rest is the forwarding job's state,
    written by it with queryset updates only (no signals, no lost update against a console
    save): its lease, its counters, the last outcome. Where each family stands is in
    `ForwardCursor`, one row per family.
    """

    CONFIG_FIELDS = ("name", "type", "destination", "topic", "families", "facility", "enabled")

    name = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=16, choices=ForwarderType.choices)
    destination = models.CharField(
        max_length=2000,
        help_text="syslog: host:port. Webhook: the https:// (or http://) URL to POST to. "
        "Kafka: bootstrap servers, host:port[,host:port...].",
    )
    topic = models.CharField(max_length=249, blank=True, help_text="Kafka only.")
    families = models.JSONField(default=list, help_text="Log families sent.")
    facility = models.PositiveSmallIntegerField(
        choices=Facility.choices, default=Facility.LOCAL0, help_text="syslog only."
    )
    enabled = models.BooleanField(default=True)
    # The webhook's HMAC key, as an envelope of thinkwatch.lib.crypto; never shown back.
    secret = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)

    # The forwarding job's state.
    lease_owner = models.CharField(max_length=32, blank=True, editable=False)
    lease_until = models.DateTimeField(null=True, editable=False)
    paused_until = models.DateTimeField(null=True, editable=False)
    consecutive_failures = models.PositiveIntegerField(default=0, editable=False)
    failures_total = models.BigIntegerField(default=0, editable=False)
    forwarded_total = models.BigIntegerField(default=0, editable=False)
    last_success_at = models.DateTimeField(null=True, editable=False)
    last_error = models.TextField(blank=True, editable=False)
    last_error_at = models.DateTimeField(null=True, editable=False)

    class Meta:
        ordering = ["name"]
        verbose_name = "SIEM forwarder"

    def __str__(self) -> str:
        return self.name

    @property
    def has_secret(self) -> bool:
        return bool(self.secret)

    def set_secret(self, plaintext: str) -> None:
        from thinkwatch.lib import crypto

        self.secret = crypto.encrypt(plaintext, FORWARDER_SECRET_PURPOSE) if plaintext else ""

    def reveal_secret(self) -> str:
        from thinkwatch.lib import crypto

        return crypto.decrypt(self.secret, FORWARDER_SECRET_PURPOSE) if self.secret else ""

    def clean(self) -> None:
        from audit.forwarding.destinations import check

        check(self)


class ForwardCursor(models.Model):
    """The last sequence number of one family a forwarder has dealt with: sent, or put in
    the outbox. Moved only by compare-and-set (`seq` as read), so two runs never both
    advance it over the same records."""

    forwarder = models.ForeignKey(Forwarder, on_delete=models.CASCADE, related_name="cursors")
    family = models.CharField(max_length=16)
    seq = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["forwarder", "family"], name="forwardcursor_unique")
        ]

    def __str__(self) -> str:
        return f"{self.forwarder_id} {self.family} @ {self.seq}"


class ForwardOutbox(models.Model):
    """A batch a forwarder could not deliver after its retries: kept, with its records as
    sent, and retried with backoff until it goes through or an admin discards it."""

    forwarder = models.ForeignKey(Forwarder, on_delete=models.CASCADE, related_name="outbox")
    family = models.CharField(max_length=16)
    first_seq = models.BigIntegerField()
    last_seq = models.BigIntegerField()
    count = models.PositiveIntegerField()
    batch_id = models.CharField(max_length=32)  # the Idempotency-Key of every attempt
    payload = models.TextField()  # the batch's records, as a JSON array
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        verbose_name = "forwarding outbox entry"
        verbose_name_plural = "forwarding outbox (dead letters)"

    def __str__(self) -> str:
        return f"{self.family} {self.first_seq}..{self.last_seq}"
