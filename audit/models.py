from django.db import models


class GatewayLog(models.Model):
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


class AuditEvent(models.Model):
    """Something that happened to the installation: a change made by an admin (with the
    values before and after, secrets redacted: audit/changes.py), a sign-in, a budget
    crossing a threshold, counters being reset."""

    created_at = models.DateTimeField(auto_now_add=True)
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


class McpLog(models.Model):
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
