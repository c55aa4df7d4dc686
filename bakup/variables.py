"""Every environment variable bakup reads, in one table: its default, its meaning, and whether
its value is a secret. `bakup config` lists them from here, and a test checks that every name
the code looks up is in this table, so the list cannot drift from the code.

The whole-number settings take their defaults and meanings from ``INTEGER_VARIABLES`` in
``bakup.settings``, where they are validated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bakup.settings import INTEGER_VARIABLES

# How a value is shown: "plain" as it is; "url" with the password of every URL (and secret
# query parameters) hidden; "url-token" as scheme://host/*** (the path or query is the
# credential: Slack and other webhooks, health-check ping URLs); "secret" not at all.
Secrecy = Literal["plain", "url", "url-token", "secret"]


@dataclass(frozen=True)
class Variable:
    """One environment variable bakup reads."""

    name: str
    group: str
    default: str  # as shown to people; "" when there is none
    meaning: str
    secrecy: Secrecy = "plain"
    # May be read from the file NAME_FILE names instead (bakup.settings.read_secret).
    from_file: bool = False
    # Set by bakup itself for its children, or a test hook: never configuration to list.
    internal: bool = False


def _whole_number(name: str, group: str) -> Variable:
    default, meaning = INTEGER_VARIABLES[name]
    return Variable(name, group, str(default), meaning)


DATABASE, STORAGE, RETENTION, SERVICE, METRICS, ALERTS, CLOUD, INTERNAL = (
    "database",
    "storage",
    "retention",
    "worker and beat",
    "metrics",
    "notifications",
    "cloud credentials (read by the object-store client)",
    "internal",
)

VARIABLES: tuple[Variable, ...] = (
    Variable(
        "DATABASE_URL",
        DATABASE,
        "",
        "postgresql:// URL of the database to back up (required for backup and check)",
        "url",
        from_file=True,
    ),
    Variable("BAKUP_CONFIG", DATABASE, "", "TOML file listing several databases"),
    Variable("TARGET_DATABASE_URL", DATABASE, "", "database `bakup restore` writes into", "url"),
    Variable(
        "VERIFY_DATABASE_URL",
        DATABASE,
        "(the source server)",
        "server on which test restores create their scratch database",
        "url",
        from_file=True,
    ),
    Variable("PG_BIN_DIR", DATABASE, "(search PATH)", "directory holding pg_dump and pg_restore"),
    Variable(
        "PG_CLIENT_DIRS",
        DATABASE,
        "/usr/lib/postgresql/*/bin:/usr/pgsql-*/bin",
        "where installed client majors are looked for (glob patterns separated by ':')",
    ),
    Variable("PATH", DATABASE, "", "where pg_dump is looked for when no installed major fits"),
    _whole_number("PG_CONNECT_TIMEOUT", DATABASE),
    Variable(
        "PGCONNECT_TIMEOUT",
        DATABASE,
        "",
        "libpq's connect timeout, used when PG_CONNECT_TIMEOUT is unset",
    ),
    _whole_number("PG_LOCK_WAIT_TIMEOUT", DATABASE),
    Variable("BACKUP_DIR", STORAGE, "./backups", "where backups are written"),
    Variable(
        "STORAGE_URL",
        STORAGE,
        "(BACKUP_DIR)",
        "where backups go: file://, s3://, gs:// or az:// (several separated by spaces)",
        "url",
    ),
    Variable("S3_ENDPOINT_URL", STORAGE, "", "endpoint of an S3-compatible service", "url"),
    Variable("COMPRESSION", STORAGE, "gzip", "gzip, zstd or none"),
    Variable(
        "BACKUP_FORMAT",
        STORAGE,
        "single",
        "single (one compressed file per backup) or dedup (deduplicated chunks)",
    ),
    Variable("COMPRESSION_LEVEL", STORAGE, "gzip 2, zstd 3", "gzip 0-3, zstd 1-22"),
    Variable("ENCRYPTION_RECIPIENTS", STORAGE, "", "age public keys backups are encrypted to"),
    Variable(
        "ENCRYPTION_IDENTITY_FILE",
        STORAGE,
        "",
        "file with the age secret key(s) restore and verify decrypt with",
    ),
    _whole_number("RETENTION_DAYS", RETENTION),
    _whole_number("MAX_BACKUPS", RETENTION),
    _whole_number("KEEP_DAILY", RETENTION),
    _whole_number("KEEP_WEEKLY", RETENTION),
    _whole_number("KEEP_MONTHLY", RETENTION),
    Variable(
        "REDIS_URL",
        SERVICE,
        "",
        "the Celery broker, also holding locks and schedule state (required for worker, beat)",
        "url",
        from_file=True,
    ),
    Variable(
        "BACKUP_SCHEDULE",
        SERVICE,
        "0 2 * * *",
        "when the worker backs up: a cron line (UTC), `every 30m`, or `disable`",
    ),
    Variable("VERIFY_LEVEL", SERVICE, "restore", "after each backup: restore, integrity or off"),
    Variable(
        "VERIFY_FREQUENCY",
        SERVICE,
        "(every backup)",
        "with VERIFY_LEVEL=restore: test-restore at most this often",
    ),
    Variable(
        "PROGRESS_INTERVAL",
        SERVICE,
        "30",
        "seconds between two progress lines of a long backup, restore or verification when "
        "the output is not a terminal (0: none)",
    ),
    _whole_number("BACKUP_TIME_LIMIT", SERVICE),
    _whole_number("BACKUP_RETRIES", SERVICE),
    _whole_number("RETRY_BASE_SECONDS", SERVICE),
    _whole_number("RETRY_MAX_SECONDS", SERVICE),
    _whole_number("LOCK_TTL", SERVICE),
    _whole_number("CATCH_UP_INTERVAL", SERVICE),
    _whole_number("ALERT_REDELIVERY_SECONDS", SERVICE),
    Variable(
        "BEAT_SCHEDULE_FILE",
        SERVICE,
        "BACKUP_DIR/.celerybeat-schedule",
        "where beat keeps its state (object storage only: XDG state directory)",
    ),
    Variable(
        "XDG_STATE_HOME",
        SERVICE,
        "~/.local/state",
        "holds bakup/celerybeat-schedule when backups go to object storage only",
    ),
    _whole_number("METRICS_PORT", METRICS),
    Variable("METRICS_ADDRESS", METRICS, "0.0.0.0", "address the worker's /metrics listens on"),
    Variable(
        "PUSHGATEWAY_URL",
        METRICS,
        "",
        "a one-shot `bakup backup` pushes its metrics there",
        "url",
    ),
    Variable(
        "METRICS_TEXTFILE",
        METRICS,
        "",
        "a one-shot `bakup backup` writes its metrics there (node_exporter textfile)",
    ),
    Variable(
        "SMTP_URL",
        ALERTS,
        "",
        "smtp:// (STARTTLS) or smtps:// URL with the login; enables email",
        "url",
        from_file=True,
    ),
    Variable("ALERT_EMAIL_FROM", ALERTS, "", "sender of alert emails"),
    Variable("ALERT_EMAIL_TO", ALERTS, "", "recipients of alert emails, separated by commas"),
    Variable(
        "SLACK_WEBHOOK_URL",
        ALERTS,
        "",
        "a Slack incoming webhook; enables Slack",
        "url-token",
        from_file=True,
    ),
    Variable(
        "WEBHOOK_URL",
        ALERTS,
        "",
        "any URL that receives events as JSON",
        "url-token",
        from_file=True,
    ),
    Variable(
        "WEBHOOK_SECRET",
        ALERTS,
        "",
        "signs webhook events with HMAC-SHA256",
        "secret",
        from_file=True,
    ),
    Variable(
        "HEALTHCHECK_URL",
        ALERTS,
        "",
        "a healthchecks.io-style ping URL",
        "url-token",
        from_file=True,
    ),
    Variable(
        "NOTIFY_ON_SUCCESS", ALERTS, "false", "also send a notice for every successful backup"
    ),
    Variable("ALERT_REPEAT_HOURS", ALERTS, "24", "reminder interval while a failure lasts"),
    Variable("TEMPLATE_DIR", ALERTS, "", "a folder whose templates override the built-in ones"),
    Variable(
        "SUMMARY_SCHEDULE",
        ALERTS,
        "0 8 * * 1",
        "when the worker sends the weekly summary (cron line, UTC, or `disable`)",
    ),
    Variable("AWS_ACCESS_KEY_ID", CLOUD, "", "S3 access key id", "secret"),
    Variable("AWS_SECRET_ACCESS_KEY", CLOUD, "", "S3 secret key", "secret"),
    Variable("AWS_SESSION_TOKEN", CLOUD, "", "S3 session token", "secret"),
    Variable("AWS_REGION", CLOUD, "", "S3 region"),
    Variable("GOOGLE_APPLICATION_CREDENTIALS", CLOUD, "", "GCS service-account key file"),
    Variable("GOOGLE_SERVICE_ACCOUNT", CLOUD, "", "GCS service-account key file"),
    Variable("GOOGLE_SERVICE_ACCOUNT_PATH", CLOUD, "", "GCS service-account key file"),
    Variable("GOOGLE_SERVICE_ACCOUNT_KEY", CLOUD, "", "GCS service-account key (JSON)", "secret"),
    Variable("GOOGLE_BEARER_TOKEN", CLOUD, "", "GCS bearer token", "secret"),
    Variable("GOOGLE_BASE_URL", CLOUD, "", "GCS endpoint (an emulator)", "url"),
    Variable("AZURE_STORAGE_ACCOUNT_NAME", CLOUD, "", "Azure storage account"),
    Variable("AZURE_STORAGE_ACCOUNT_KEY", CLOUD, "", "Azure storage account key", "secret"),
    Variable(
        "PROMETHEUS_MULTIPROC_DIR",
        INTERNAL,
        "",
        "the worker's metrics folder, set by `bakup worker` for its processes",
        internal=True,
    ),
    Variable(
        "BAKUP_CRASH_AT",
        INTERNAL,
        "",
        "test hook: the step at which bakup kills itself (bakup/failpoints.py)",
        internal=True,
    ),
    Variable(
        "BAKUP_PAUSE_AT",
        INTERNAL,
        "",
        "test hook: the step at which bakup pauses, and for how long (bakup/failpoints.py)",
        internal=True,
    ),
    Variable(
        "BAKUP_LEASE_SECONDS",
        INTERNAL,
        "600",
        "test hook: the lease of a backup's claim and of a chunk collection (bakup/lease.py)",
        internal=True,
    ),
)

BY_NAME = {variable.name: variable for variable in VARIABLES}
