"""ThinkWatch settings.

Every value comes from the environment (a `.env` file beside manage.py is read too).
With nothing configured the embedded mode works: SQLite, secrets and data under `var/`,
in-process caches, a Celery broker that needs no server. `DATABASE_URL`, `REDIS_URL` and
friends switch in real infrastructure. A malformed value stops startup with an error that
names the variable.
"""

import ipaddress
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured

from thinkwatch import keyfiles

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
if (BASE_DIR / ".env").is_file():
    env.read_env(BASE_DIR / ".env")


def _number(name: str, default: float, minimum: float, kind: type) -> Any:
    raw = env.str(name, default=str(default))
    try:
        value = kind(raw)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise ImproperlyConfigured(f"{name} must be {expected}, got {raw!r}") from None
    if value < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {value}")
    return value


def _int(name: str, default: int, minimum: int = 0) -> int:
    return int(_number(name, default, minimum, int))


def _float(name: str, default: float, minimum: float = 0.0) -> float:
    return float(_number(name, default, minimum, float))


def _bool(name: str, default: bool) -> bool:
    raw = env.str(name, default="true" if default else "false").strip().lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}")


def _list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in env.str(name, default=default).split(",") if item.strip()]


def _master_key(name: str, value: str) -> bytes:
    if not re.fullmatch(r"[0-9a-fA-F]{64}", value):
        raise ImproperlyConfigured(f"{name} must be 64 hex characters (32 bytes for AES-256)")
    return bytes.fromhex(value)


# --- where things live --------------------------------------------------------------

DATA_DIR = Path(env.str("THINKWATCH_DATA_DIR", default="var"))
if not DATA_DIR.is_absolute():
    DATA_DIR = BASE_DIR / DATA_DIR

SECRET_KEY = keyfiles.load_or_create(
    "THINKWATCH_SECRET_KEY", DATA_DIR / "secret_key", keyfiles.new_django_secret
)
if len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("THINKWATCH_SECRET_KEY must be at least 32 characters")

# AES-256-GCM key for provider secrets. Older keys stay readable after a rotation until
# `manage.py reencrypt_secrets` has moved every secret to the current key.
MASTER_KEY = _master_key(
    "THINKWATCH_MASTER_KEY",
    keyfiles.load_or_create(
        "THINKWATCH_MASTER_KEY", DATA_DIR / "master.key", keyfiles.new_master_key
    ),
)
PREVIOUS_MASTER_KEYS = [
    _master_key("THINKWATCH_PREVIOUS_MASTER_KEYS", value)
    for value in _list("THINKWATCH_PREVIOUS_MASTER_KEYS")
]

DEBUG = _bool("THINKWATCH_DEBUG", False)

# --- processes and addresses ---------------------------------------------------------

BIND_ADDRESS = env.str("THINKWATCH_BIND", default="127.0.0.1")
GATEWAY_PORT = _int("THINKWATCH_GATEWAY_PORT", 3000, minimum=1)
CONSOLE_PORT = _int("THINKWATCH_CONSOLE_PORT", 3001, minimum=1)
ALLOWED_HOSTS = _list("THINKWATCH_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
if BIND_ADDRESS not in ("0.0.0.0", "::") and BIND_ADDRESS not in ALLOWED_HOSTS:  # noqa: S104
    ALLOWED_HOSTS.append(BIND_ADDRESS)
CSRF_TRUSTED_ORIGINS = _list("THINKWATCH_CSRF_TRUSTED_ORIGINS")
# Peers whose X-Forwarded-For is believed when recording a client's address.
TRUSTED_PROXIES = frozenset(_list("THINKWATCH_TRUSTED_PROXIES"))

# --- gateway -------------------------------------------------------------------------

GATEWAY_MAX_BODY_BYTES = _int("THINKWATCH_MAX_BODY_BYTES", 10 * 1024 * 1024, minimum=1024)
UPSTREAM_CONNECT_TIMEOUT = _float("THINKWATCH_UPSTREAM_CONNECT_TIMEOUT", 10.0, minimum=0.01)
# LLM responses can take minutes before the first byte; providers can override this.
UPSTREAM_READ_TIMEOUT = _float("THINKWATCH_UPSTREAM_READ_TIMEOUT", 600.0, minimum=0.01)
UPSTREAM_MAX_CONNECTIONS = _int("THINKWATCH_UPSTREAM_MAX_CONNECTIONS", 1000, minimum=1)
# Honour HTTP(S)_PROXY / NO_PROXY for upstream calls (egress through a corporate proxy).
UPSTREAM_PROXY_FROM_ENV = _bool("THINKWATCH_UPSTREAM_PROXY_FROM_ENV", False)
GATEWAY_DRAIN_SECONDS = _int("THINKWATCH_DRAIN_SECONDS", 30, minimum=0)
# How often each gateway process checks whether keys, models or routes changed. With
# REDIS_URL a change is announced over pub/sub at once and the check only catches an
# announcement that was lost, at the second interval (gateway/revision.py).
CONFIG_POLL_SECONDS = _float("THINKWATCH_CONFIG_POLL_SECONDS", 1.0, minimum=0.05)
CONFIG_FALLBACK_POLL_SECONDS = _float("THINKWATCH_CONFIG_FALLBACK_POLL_SECONDS", 5.0, minimum=0.05)
KEY_CACHE_SECONDS = _float("THINKWATCH_KEY_CACHE_SECONDS", 60.0, minimum=0.0)
AUDIT_BATCH_SIZE = _int("THINKWATCH_AUDIT_BATCH_SIZE", 500, minimum=1)
AUDIT_FLUSH_SECONDS = _float("THINKWATCH_AUDIT_FLUSH_SECONDS", 0.5, minimum=0.01)
# Records are durable against a killed process as soon as they are accepted; this bounds
# what a host crash can take (0: leave it to the kernel's writeback).
AUDIT_FSYNC_SECONDS = _float("THINKWATCH_AUDIT_FSYNC_SECONDS", 1.0, minimum=0.0)
# One access record per HTTP request on either port (audit/access.py).
AUDIT_ACCESS_LOG = _bool("THINKWATCH_AUDIT_ACCESS_LOG", True)
# Namespace of the Redis streams the audit pipeline uses in production, and of the config
# announcements' channel (<prefix>config:<db>).
AUDIT_STREAM_PREFIX = env.str("THINKWATCH_AUDIT_STREAM_PREFIX", default="tw:")
# This, DEFAULT_ROLE and DELETED_KEY_PURGE_DAYS start runtime settings (accounts/runtime.py).
KEY_ROTATION_GRACE_HOURS = _int("THINKWATCH_KEY_ROTATION_GRACE_HOURS", 24)
# The role every new account holds globally (a role slug; empty: none).
DEFAULT_ROLE = env.str("THINKWATCH_DEFAULT_ROLE", default="developer")
DELETED_KEY_PURGE_DAYS = _int("THINKWATCH_DELETED_KEY_PURGE_DAYS", 30, minimum=1)

# Prometheus metrics at GET /metrics on the gateway port: served only when this is set, to
# callers presenting it as `Authorization: Bearer <token>` (docs/observability.md).
METRICS_BEARER_TOKEN = keyfiles.optional("METRICS_BEARER_TOKEN")

# --- response cache (docs/cache.md) --------------------------------------------------

# The largest answer the response cache keeps, in bytes; larger answers are not cached.
CACHE_MAX_ENTRY_BYTES = _int("THINKWATCH_CACHE_MAX_ENTRY_BYTES", 1024 * 1024, minimum=1)
# Without REDIS_URL: how much memory each gateway process gives its cached answers, in
# bytes; the least recently used go first.
CACHE_MEMORY_BYTES = _int("THINKWATCH_CACHE_MEMORY_BYTES", 64 * 1024 * 1024, minimum=0)

# --- quotas --------------------------------------------------------------------------

# When the quota store (Redis) cannot be reached: admit and count it (false), or refuse
# with 429 rate_limiter_unavailable (true).
QUOTA_FAIL_CLOSED = _bool("THINKWATCH_QUOTA_FAIL_CLOSED", False)
# Output tokens assumed for a request that sets no maximum, when reserving budget.
QUOTA_DEFAULT_MAX_TOKENS = _int("THINKWATCH_QUOTA_DEFAULT_MAX_TOKENS", 4096, minimum=1)
# How long a request's budget reservation lives if it is never settled (a crash).
QUOTA_HOLD_SECONDS = _int("THINKWATCH_QUOTA_HOLD_SECONDS", 3600, minimum=60)
# Where budget alerts go when a budget names no webhook of its own; signed with the secret
# (a runtime setting's default).
BUDGET_ALERT_WEBHOOK_URL = env.str("THINKWATCH_BUDGET_ALERT_WEBHOOK_URL", default="")
WEBHOOK_SECRET = keyfiles.optional("THINKWATCH_WEBHOOK_SECRET")

# --- console sign-in -----------------------------------------------------------------

# Failed sign-ins for one account before it is locked, and the first lock's length (it
# doubles with each further failure, up to a day).
LOGIN_FAILURES_BEFORE_LOCK = _int("THINKWATCH_LOGIN_FAILURES_BEFORE_LOCK", 5, minimum=1)
LOGIN_LOCK_SECONDS = _int("THINKWATCH_LOGIN_LOCK_SECONDS", 60, minimum=1)

# --- MCP gateway ---------------------------------------------------------------------

# Address ranges upstream MCP servers and OAuth endpoints may live in although they are
# private, loopback or link-local (CIDRs, comma-separated), e.g. 10.0.0.0/8,127.0.0.1/32.
MCP_ALLOWED_NETWORKS = _list("THINKWATCH_MCP_ALLOWED_NETWORKS")
for _network in MCP_ALLOWED_NETWORKS:
    try:
        ipaddress.ip_network(_network, strict=False)
    except ValueError as _exc:
        raise ImproperlyConfigured(f"THINKWATCH_MCP_ALLOWED_NETWORKS: {_exc}") from None
# The prefix a client puts before the gateway's tool names (Claude Code: mcp__<server>__);
# names are kept within 64 characters including it.
MCP_CLIENT_PREFIX = env.str("THINKWATCH_MCP_CLIENT_PREFIX", default="mcp__thinkwatch__")
# Browser origins allowed to call /mcp (requests without Origin are always allowed).
MCP_ALLOWED_ORIGINS = frozenset(_list("THINKWATCH_MCP_ALLOWED_ORIGINS"))
# A runtime setting's default, as is CONSOLE_PUBLIC_URL.
MCP_SESSION_IDLE_SECONDS = _int("THINKWATCH_MCP_SESSION_IDLE_SECONDS", 3600, minimum=60)
MCP_PAGE_SIZE = _int("THINKWATCH_MCP_PAGE_SIZE", 100, minimum=1)
# How long a server's tool, resource and prompt lists are reused before asking again
# (a list_changed notification from the server refreshes them at once).
MCP_LIST_CACHE_SECONDS = _float("THINKWATCH_MCP_LIST_CACHE_SECONDS", 60.0, minimum=0.0)
# Circuit breaker per upstream server: consecutive failures before it opens, and how long
# it stays open before one trial call.
MCP_BREAKER_FAILURES = _int("THINKWATCH_MCP_BREAKER_FAILURES", 5, minimum=1)
MCP_BREAKER_OPEN_SECONDS = _float("THINKWATCH_MCP_BREAKER_OPEN_SECONDS", 30.0, minimum=0.1)
# The console's public URL, used in the connect links of "credential missing" errors.
CONSOLE_PUBLIC_URL = env.str("THINKWATCH_CONSOLE_PUBLIC_URL", default="")
# Where clients reach the gateway (the guide page's snippets); a runtime setting's default.
GATEWAY_PUBLIC_URL = env.str("THINKWATCH_GATEWAY_PUBLIC_URL", default="http://localhost:3000")
# Browser origins allowed to call /api/ (a runtime setting's default).
CORS_ALLOWED_ORIGINS_DEFAULT = _list("THINKWATCH_CORS_ALLOWED_ORIGINS")

# --- infrastructure ------------------------------------------------------------------

DATABASE_URL = env.str("DATABASE_URL", default="") or f"sqlite:///{DATA_DIR / 'thinkwatch.sqlite3'}"
DATABASES = {"default": environ.Env.db_url_config(DATABASE_URL)}
_db: dict[str, Any] = DATABASES["default"]
_db["CONN_MAX_AGE"] = 0
if _db["ENGINE"] == "django.db.backends.sqlite3":
    _db["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    _db["TEST"] = {"NAME": str(DATA_DIR / "test.sqlite3")}
elif _db["ENGINE"] == "django.db.backends.postgresql":
    _db.setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": _int("THINKWATCH_DB_POOL_SIZE", 10, minimum=1),
        "timeout": 10,
    }
else:
    raise ImproperlyConfigured("DATABASE_URL must be postgres://... (or sqlite:///path)")

REDIS_URL = env.str("REDIS_URL", default="")
REDIS_MAX_CONNECTIONS = _int("THINKWATCH_REDIS_MAX_CONNECTIONS", 200, minimum=1)
if REDIS_URL and not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
    raise ImproperlyConfigured("REDIS_URL must start with redis://, rediss:// or unix://")

if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "tw",
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# ClickHouse for log records at scale (docs/audit.md), e.g.
# clickhouse://user:password@host:9000/thinkwatch (clickhouses:// for TLS), or
# CLICKHOUSE_URL_FILE. Unset: log records stay in the SQL database.
CLICKHOUSE_URL = keyfiles.optional("CLICKHOUSE_URL")


def _check_clickhouse_url(url: str) -> None:
    # Never the URL itself in a message: it holds the password.
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        raise ImproperlyConfigured("CLICKHOUSE_URL has a malformed port") from None
    if parts.scheme not in ("clickhouse", "clickhouses") or not parts.hostname:
        raise ImproperlyConfigured(
            "CLICKHOUSE_URL must be clickhouse://user:password@host:9000/database "
            "(clickhouses:// for TLS)"
        )
    # The name goes into DDL and queries as `database.table`: letters, digits, underscores.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", parts.path.removeprefix("/")):
        raise ImproperlyConfigured(
            "CLICKHOUSE_URL must end in a database name of letters, digits and underscores, "
            "e.g. /thinkwatch"
        )


if CLICKHOUSE_URL:
    _check_clickhouse_url(CLICKHOUSE_URL)

# Captured bodies larger than the record keeps go to S3-compatible storage (docs/bodies.md);
# no bucket: they are truncated instead. Without keys, boto3's own chain is used (instance
# role, AWS_* variables); the keys may come from <NAME>_FILE.
BODY_S3_BUCKET = env.str("THINKWATCH_BODY_S3_BUCKET", default="")
BODY_S3_ENDPOINT_URL = env.str("THINKWATCH_BODY_S3_ENDPOINT_URL", default="")
BODY_S3_REGION = env.str("THINKWATCH_BODY_S3_REGION", default="")
BODY_S3_ACCESS_KEY_ID = keyfiles.optional("THINKWATCH_BODY_S3_ACCESS_KEY_ID")
BODY_S3_SECRET_ACCESS_KEY = keyfiles.optional("THINKWATCH_BODY_S3_SECRET_ACCESS_KEY")
if BODY_S3_BUCKET and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", BODY_S3_BUCKET):
    raise ImproperlyConfigured(
        "THINKWATCH_BODY_S3_BUCKET must be a bucket name: 3 to 63 lowercase letters, digits, "
        "dots and hyphens"
    )
if BODY_S3_ENDPOINT_URL:
    _endpoint = urlsplit(BODY_S3_ENDPOINT_URL)
    if _endpoint.scheme not in ("http", "https") or not _endpoint.hostname:
        raise ImproperlyConfigured(
            "THINKWATCH_BODY_S3_ENDPOINT_URL must be an http(s) URL, e.g. https://minio.internal:9000"
        )
if bool(BODY_S3_ACCESS_KEY_ID) != bool(BODY_S3_SECRET_ACCESS_KEY):
    raise ImproperlyConfigured(
        "THINKWATCH_BODY_S3_ACCESS_KEY_ID and THINKWATCH_BODY_S3_SECRET_ACCESS_KEY go together: "
        "set both, or neither"
    )

# Celery: Redis in production; in embedded mode a broker in the data directory.
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
if not REDIS_URL:
    _queue_dir = DATA_DIR / "celery"
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_queue_dir / "queue"),
        "data_folder_out": str(_queue_dir / "queue"),
        "processed_folder": str(_queue_dir / "processed"),
        "control_folder": str(_queue_dir / "control"),
        "store_processed": False,
    }
CELERY_TASK_IGNORE_RESULT = True
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# Mail (key expiry warnings): one URL, e.g. smtp+tls://user:password@mail.example.com:587
# (or EMAIL_URL_FILE). Embedded default: printed by the worker instead of sent.
_email_url = keyfiles.optional("EMAIL_URL") or "consolemail://"
try:
    _email = environ.Env.email_url_config(_email_url)
except (ImproperlyConfigured, ValueError):
    # Not the URL itself in the message: it holds the mail password.
    raise ImproperlyConfigured(
        "EMAIL_URL must be smtp://, smtp+tls://, smtps://, consolemail:// or filemail://..."
    ) from None
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
EMAIL_FILE_PATH = _email.get("EMAIL_FILE_PATH") or str(DATA_DIR / "mail")
EMAIL_TIMEOUT = 30
DEFAULT_FROM_EMAIL = env.str("THINKWATCH_EMAIL_FROM", default="ThinkWatch <thinkwatch@localhost>")

# --- Django --------------------------------------------------------------------------

INSTALLED_APPS = [
    "thinkwatch.adminconfig.ConsoleAdminConfig",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "ninja",
    "corsheaders",
    "guardian",
    "accounts",
    "providers",
    "gateway",
    "quotas",
    "audit",
    "mcpgw",
]

# Global rights live as Django user permissions, team-scoped ones as django-guardian
# object permissions on the team (accounts/access.py derives both from role assignments).
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "guardian.backends.ObjectPermissionBackend",
    # Single sign-on, configured in the console (accounts/oidc.py); inert until enabled.
    "accounts.oidc.OidcBackend",
]
ANONYMOUS_USER_NAME = None  # django-guardian: no anonymous user row

# The console's middleware. The gateway runs none (see gateway/handler.py).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "thinkwatch.headers.security_headers",
    "corsheaders.middleware.CorsMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Changes made while a request runs are recorded in the admin audit log (audit/changes.py).
    "audit.context.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "accounts.sessions.SessionGuardMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "thinkwatch.urls_console"
GATEWAY_URLCONF = "thinkwatch.urls_gateway"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {
        "NAME": "django.contrib.auth.password_validation.MinimumLengthValidator",
        "OPTIONS": {"min_length": 12},
    },
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
    {"NAME": "accounts.passwords.CharacterClassValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"  # filled by collectstatic (make run does it)
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
SESSION_COOKIE_SECURE = _bool("THINKWATCH_SECURE_COOKIES", False)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
# Sent on every console response when set (thinkwatch/headers.py); on by default with
# secure cookies, since the console is then served over HTTPS.
SECURE_HSTS_SECONDS = _int("THINKWATCH_HSTS_SECONDS", 31_536_000 if SESSION_COOKIE_SECURE else 0)
# CORS for the management API only. The allowed origins are the runtime setting
# security.cors_allowed_origins (thinkwatch/headers.py), so none are listed here; no
# cookies cross origins: browser callers use tw- keys.
CORS_URLS_REGEX = r"^/api/"
CORS_ALLOWED_ORIGINS: list[str] = []
CORS_ALLOW_CREDENTIALS = False

LOG_LEVEL = env.str("THINKWATCH_LOG_LEVEL", default="INFO").upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"kv": {"()": "thinkwatch.logfmt.KeyValueFormatter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "kv"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # Request bodies never reach a log; Django's request logger would add them on 5xx.
        "django.request": {"level": "ERROR"},
        "django.server": {"level": "WARNING"},
        # httpx logs every request's full URL at INFO: outbound URLs may carry tokens
        # (webhook URLs of budget alerts and SIEM forwarders; MCP upstreams, called with
        # httpx2, may take a token in their URL).
        "httpx": {"level": "WARNING"},
        "httpx2": {"level": "WARNING"},
    },
}
