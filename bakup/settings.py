"""All of bakup's configuration, read from the environment and checked at once.

Variables keep the original backup script's names and defaults (DATABASE_URL, BACKUP_DIR,
RETENTION_DAYS=30, MAX_BACKUPS=30). Any secret variable can instead be read from a file named by
``<NAME>_FILE`` (Docker and Kubernetes secrets). Every problem is collected and reported
together, each naming its variable, so one run shows everything to fix.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bakup.catalog import BACKUP_FORMATS, DEDUP, Backup
from bakup.compression import REGISTRY
from bakup.dburl import ConnectionParams, DatabaseUrlError, parse_database_url
from bakup.errors import ConfigError
from bakup.pgtools import DEFAULT_CONNECT_TIMEOUT, DEFAULT_LOCK_WAIT_TIMEOUT
from bakup.retention import RetentionPolicy
from bakup.schedule import Schedule, ScheduleError, parse_schedule
from bakup.targets import Target, load_targets_file, single_target

DEFAULT_BACKUP_DIR = "./backups"
OBJECT_SCHEMES = ("s3://", "gs://", "az://")
DEFAULT_SCHEDULE = "0 2 * * *"
_DURATION = re.compile(r"^(\d+)\s*(s|m|h|d|w)$", re.IGNORECASE)
_DURATION_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``7d``, ``12h``, ``30m``, ``0``. Raises ValueError."""
    if text.strip() == "0":
        return 0.0
    match = _DURATION.match(text.strip())
    if match is None:
        raise ValueError(text)
    return float(int(match.group(1)) * _DURATION_SECONDS[match.group(2).lower()])


VERIFY_LEVELS = ("restore", "integrity", "off")

# name -> (default, meaning): the single source for validation and for `bakup check`'s output.
INTEGER_VARIABLES: dict[str, tuple[int, str]] = {
    "RETENTION_DAYS": (30, "delete backups older than this many days (0: no age limit)"),
    "MAX_BACKUPS": (30, "keep at most this many backups (0: no count limit)"),
    "KEEP_DAILY": (0, "also keep the newest backup of each of this many recent days"),
    "KEEP_WEEKLY": (0, "also keep the newest backup of each of this many recent ISO weeks"),
    "KEEP_MONTHLY": (0, "also keep the newest backup of each of this many recent months"),
    "BACKUP_TIME_LIMIT": (6 * 3600, "seconds after which a backup task is stopped"),
    "BACKUP_RETRIES": (5, "how often a transient backup failure is retried"),
    "RETRY_BASE_SECONDS": (60, "first retry delay; it doubles each time, with jitter"),
    "RETRY_MAX_SECONDS": (1800, "the longest delay between retries"),
    "LOCK_TTL": (60, "seconds a dead worker's database lock outlives it"),
    "CATCH_UP_INTERVAL": (300, "seconds between checks for missed scheduled backups"),
    "ALERT_REDELIVERY_SECONDS": (
        120,
        "seconds after which an alert whose delivery has not finished (its worker died) is "
        "queued again by the next catch-up check",
    ),
    "METRICS_PORT": (9808, "port of the worker's /metrics (0: no metrics server)"),
    "PG_CONNECT_TIMEOUT": (
        DEFAULT_CONNECT_TIMEOUT,
        "seconds a server may take to answer a connection (0: no limit)",
    ),
    "PG_LOCK_WAIT_TIMEOUT": (
        DEFAULT_LOCK_WAIT_TIMEOUT,
        "seconds pg_dump waits for a table another session locked (0: no limit)",
    ),
}


@dataclass(frozen=True)
class Settings:
    """Validated configuration for one bakup process."""

    database: ConnectionParams | None
    backup_dir: Path
    retention: RetentionPolicy
    compression: str = "gzip"
    compression_level: int | None = None
    pg_bin_dir: Path | None = None
    schedule: Schedule = field(default_factory=lambda: parse_schedule(DEFAULT_SCHEDULE))
    targets: tuple[Target, ...] = ()
    redis_url: str | None = field(default=None, repr=False)
    verify_level: str = "restore"
    # With VERIFY_LEVEL=restore: test-restore at most this often (seconds; 0: every backup),
    # an integrity check in between.
    verify_frequency: float = 0.0
    verify_database: ConnectionParams | None = None
    backup_time_limit: int = 6 * 3600
    backup_retries: int = 5
    retry_base_seconds: int = 60
    retry_max_seconds: int = 1800
    lock_ttl: int = 60
    catch_up_interval: int = 300
    alert_redelivery_seconds: int = 120
    metrics_port: int = 9808
    metrics_address: str = "0.0.0.0"
    pushgateway_url: str | None = None
    metrics_textfile: str | None = None
    encryption_recipients: tuple[str, ...] = ()
    encryption_identity_file: Path | None = None

    def identities(self) -> list[Any] | None:
        """The age identities from ENCRYPTION_IDENTITY_FILE (None when unset).

        Raises EncryptionError when the file cannot be read or holds no key.
        """
        if self.encryption_identity_file is None:
            return None
        from bakup.encryption import load_identities

        return load_identities(self.encryption_identity_file)

    def identities_for(self, backup: Backup) -> list[Any] | None:
        """The identities a reader of ``backup`` may need: for an encrypted backup, and for a
        deduplicated one (whose chunks show their encryption even when its manifest is lost).
        None otherwise, or when ENCRYPTION_IDENTITY_FILE is unset. Raises EncryptionError."""
        if backup.encrypted or backup.backup_format == DEDUP:
            return self.identities()
        return None

    def recipients(self) -> list[Any]:
        """The age recipients backups are encrypted to (empty: no encryption)."""
        if not self.encryption_recipients:
            return []
        from bakup.encryption import parse_recipients

        return parse_recipients(" ".join(self.encryption_recipients))

    beat_schedule_file: Path = Path("celerybeat-schedule")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, require_database: bool = True
    ) -> Settings:
        """Read and check the configuration.

        Given the environment (``os.environ`` by default) and whether the command needs a
        database; returns the settings. Raises ConfigError listing every problem found.
        """
        env = os.environ if env is None else env
        problems: list[str] = []

        database = None
        url = read_secret(env, "DATABASE_URL", problems)
        if url:
            try:
                database = parse_database_url(url)
            except DatabaseUrlError as error:
                problems.append(str(error))
        elif require_database and not env.get("BAKUP_CONFIG") and not env.get("DATABASE_URL_FILE"):
            problems.append(
                "DATABASE_URL is not set: set it to postgresql://user:password@host:5432/dbname"
            )

        backup_dir = Path(env.get("BACKUP_DIR") or DEFAULT_BACKUP_DIR)
        storage_urls = _read_destinations(env.get("STORAGE_URL", ""), problems)
        if len(storage_urls) == 1 and not storage_urls[0].startswith(OBJECT_SCHEMES):
            backup_dir, storage_urls = Path(storage_urls[0]), []

        numbers = {
            name: _read_int(env, name, default, problems)
            for name, (default, _meaning) in INTEGER_VARIABLES.items()
        }
        retention = RetentionPolicy(
            retention_days=numbers["RETENTION_DAYS"],
            max_backups=numbers["MAX_BACKUPS"],
            keep_daily=numbers["KEEP_DAILY"],
            keep_weekly=numbers["KEEP_WEEKLY"],
            keep_monthly=numbers["KEEP_MONTHLY"],
        )

        compression = (env.get("COMPRESSION") or "gzip").strip().lower()
        level = None
        if compression not in REGISTRY:
            problems.append(
                f"COMPRESSION is {compression!r}: use one of {', '.join(sorted(REGISTRY))}"
            )
        elif env.get("COMPRESSION_LEVEL"):
            level = _read_int(env, "COMPRESSION_LEVEL", 0, problems)
            levels = REGISTRY[compression].levels
            if level not in levels:
                problems.append(
                    f"COMPRESSION_LEVEL is {level} but {compression} takes "
                    f"{levels.start} to {levels.stop - 1}"
                )

        backup_format = (env.get("BACKUP_FORMAT") or "single").strip().lower()
        if backup_format not in BACKUP_FORMATS:
            problems.append(
                f"BACKUP_FORMAT is {backup_format!r}: use one of {', '.join(BACKUP_FORMATS)}"
            )
            backup_format = "single"

        pg_bin_dir = None
        if env.get("PG_BIN_DIR"):
            pg_bin_dir = Path(env["PG_BIN_DIR"])
            if not pg_bin_dir.is_dir():
                problems.append(f"PG_BIN_DIR is {str(pg_bin_dir)!r}, which is not a directory")

        schedule = parse_schedule(DEFAULT_SCHEDULE)
        try:
            schedule = parse_schedule(env.get("BACKUP_SCHEDULE") or DEFAULT_SCHEDULE)
        except ScheduleError as error:
            problems.append(str(error))

        verify_level = (env.get("VERIFY_LEVEL") or "restore").strip().lower()
        if verify_level not in VERIFY_LEVELS:
            problems.append(
                f"VERIFY_LEVEL is {verify_level!r}: use one of {', '.join(VERIFY_LEVELS)}"
            )
        verify_frequency = 0.0
        frequency_text = (env.get("VERIFY_FREQUENCY") or "").strip()
        if frequency_text:
            try:
                verify_frequency = parse_duration(frequency_text)
            except ValueError:
                problems.append(
                    f"VERIFY_FREQUENCY is {frequency_text!r}: use a duration such as 7d, 12h or "
                    "30m (empty: test-restore every backup)"
                )
        verify_database = None
        verify_url = read_secret(env, "VERIFY_DATABASE_URL", problems)
        if verify_url:
            try:
                verify_database = parse_database_url(verify_url, name="VERIFY_DATABASE_URL")
            except DatabaseUrlError as error:
                problems.append(str(error))

        if numbers["METRICS_PORT"] > 65535:
            problems.append(f"METRICS_PORT is {numbers['METRICS_PORT']}, outside 0-65535")
        pushgateway = env.get("PUSHGATEWAY_URL", "")
        if pushgateway and not pushgateway.startswith(("http://", "https://")):
            problems.append("PUSHGATEWAY_URL must start with http:// or https://")
        recipients_text = env.get("ENCRYPTION_RECIPIENTS", "").strip()
        if recipients_text:
            from bakup.encryption import parse_recipients

            try:
                parse_recipients(recipients_text)
            except ValueError as error:
                problems.append(str(error))
        identity_file = env.get("ENCRYPTION_IDENTITY_FILE", "").strip()
        if identity_file and not Path(identity_file).is_file():
            problems.append(f"ENCRYPTION_IDENTITY_FILE {identity_file!r} is not a readable file")
        redis_url = read_secret(env, "REDIS_URL", problems) or None
        if redis_url and not redis_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append("REDIS_URL must start with redis://, rediss:// or unix://")

        defaults = Target(
            name="default",
            database=database,
            backup_dir=backup_dir,
            retention=retention,
            compression=compression if compression in REGISTRY else "gzip",
            compression_level=level,
            schedule=schedule,
            storage_urls=tuple(storage_urls),
            backup_format=backup_format,
        )
        config_file = env.get("BAKUP_CONFIG")
        if config_file:
            targets = load_targets_file(Path(config_file), defaults, env, problems)
        else:
            targets = [single_target(defaults)]

        if problems:
            raise ConfigError(problems)
        return cls(
            database,
            backup_dir,
            retention,
            compression,
            level,
            pg_bin_dir,
            schedule=schedule,
            targets=tuple(targets),
            redis_url=redis_url,
            verify_level=verify_level,
            verify_frequency=verify_frequency,
            verify_database=verify_database,
            backup_time_limit=numbers["BACKUP_TIME_LIMIT"],
            backup_retries=numbers["BACKUP_RETRIES"],
            retry_base_seconds=numbers["RETRY_BASE_SECONDS"],
            retry_max_seconds=numbers["RETRY_MAX_SECONDS"],
            lock_ttl=max(numbers["LOCK_TTL"], 3),
            catch_up_interval=max(numbers["CATCH_UP_INTERVAL"], 1),
            alert_redelivery_seconds=max(numbers["ALERT_REDELIVERY_SECONDS"], 1),
            metrics_port=numbers["METRICS_PORT"],
            metrics_address=env.get("METRICS_ADDRESS") or "0.0.0.0",
            pushgateway_url=env.get("PUSHGATEWAY_URL") or None,
            metrics_textfile=env.get("METRICS_TEXTFILE") or None,
            encryption_recipients=tuple(recipients_text.replace(",", " ").split()),
            encryption_identity_file=Path(identity_file) if identity_file else None,
            beat_schedule_file=Path(
                env.get("BEAT_SCHEDULE_FILE")
                or default_beat_schedule_file(backup_dir, storage_urls, env)
            ),
        )

    @classmethod
    def for_failure_report(cls, env: Mapping[str, str] | None = None) -> Settings:
        """The little a run needs to report that its configuration is invalid: where the
        backups and incident state live (BACKUP_DIR, REDIS_URL) and where metrics go
        (METRICS_TEXTFILE, PUSHGATEWAY_URL), each read leniently: an invalid one is left
        out. No database and no target. Given the environment (``os.environ`` by default);
        raises nothing."""
        env = os.environ if env is None else env
        ignored: list[str] = []
        redis_url = read_secret(env, "REDIS_URL", ignored)
        pushgateway = env.get("PUSHGATEWAY_URL", "")
        return cls(
            None,
            Path(env.get("BACKUP_DIR") or DEFAULT_BACKUP_DIR),
            RetentionPolicy(),
            redis_url=redis_url
            if redis_url.startswith(("redis://", "rediss://", "unix://"))
            else None,
            pushgateway_url=pushgateway
            if pushgateway.startswith(("http://", "https://"))
            else None,
            metrics_textfile=env.get("METRICS_TEXTFILE") or None,
        )

    def target(self, name: str | None) -> Target:
        """Return the target called ``name``, or the only one when ``name`` is None.

        Raises ConfigError when there is no such target or the choice is ambiguous.
        """
        if name is None:
            if len(self.targets) == 1:
                return self.targets[0]
            names = ", ".join(target.name for target in self.targets)
            raise ConfigError(
                [f"several databases are configured ({names}): pick one with --database"]
            )
        for target in self.targets:
            if target.name == name:
                return target
        names = ", ".join(target.name for target in self.targets)
        raise ConfigError([f"no database named {name!r} is configured (known: {names})"])

    def require_redis(self) -> str:
        """Return REDIS_URL; raises ConfigError when it is unset."""
        if not self.redis_url:
            raise ConfigError(["REDIS_URL is not set: set it to redis://host:6379/0"])
        return self.redis_url

    def require_database(self) -> ConnectionParams:
        """Return the database to back up; raises ConfigError when DATABASE_URL is unset."""
        if self.database is None:
            raise ConfigError(
                ["DATABASE_URL is not set: set it to postgresql://user:password@host:5432/dbname"]
            )
        return self.database


def default_beat_schedule_file(
    backup_dir: Path, storage_urls: list[str], env: Mapping[str, str]
) -> Path:
    """Where beat keeps its state when BEAT_SCHEDULE_FILE is unset, never the current folder:
    a dot-file beside the backups when they are kept in a folder (BACKUP_DIR, or STORAGE_URL's
    first folder), else ``bakup/celerybeat-schedule`` in the XDG state directory
    (``$XDG_STATE_HOME``, by default ``~/.local/state``). Given BACKUP_DIR, STORAGE_URL's
    destinations and the environment; raises nothing."""
    folders = [url for url in storage_urls if not url.startswith(OBJECT_SCHEMES)]
    if not storage_urls or folders:
        return (Path(folders[0]) if folders else backup_dir) / ".celerybeat-schedule"
    state = env.get("XDG_STATE_HOME", "")
    if not state:
        try:
            state = str(Path.home() / ".local" / "state")
        except RuntimeError:  # no home directory to be found
            state = tempfile.gettempdir()
    return Path(state) / "bakup" / "celerybeat-schedule"


def _read_destinations(text: str, problems: list[str]) -> list[str]:
    """STORAGE_URL's destinations (separated by spaces or commas): folders as plain paths,
    object stores as URLs. Notes a problem for each one that is neither."""
    destinations = []
    for url in text.replace(",", " ").split():
        if url.startswith("file://") or "://" not in url:  # a folder
            destinations.append(url.removeprefix("file://"))
        elif not url.startswith(OBJECT_SCHEMES):
            scheme = url.split("://")[0]
            problems.append(f"STORAGE_URL has {scheme!r}://...: use file://, s3://, gs:// or az://")
        elif not urlsplit(url).hostname:
            problems.append(f"STORAGE_URL {url} names no bucket: write s3://bucket/prefix")
        else:
            destinations.append(url.rstrip("/"))
    return destinations


def read_secret(env: Mapping[str, str], name: str, problems: list[str]) -> str:
    """Return ``name`` from the environment, or the contents of the file ``<name>_FILE`` names."""
    value = env.get(name, "")
    file_name = env.get(f"{name}_FILE", "")
    if value and file_name:
        problems.append(f"{name} and {name}_FILE are both set: keep one")
        return value
    if file_name:
        try:
            return Path(file_name).read_text(encoding="utf-8").strip()
        except OSError as error:
            problems.append(f"{name}_FILE: cannot read {file_name!r} ({error.strerror})")
            return ""
    return value


def _read_int(env: Mapping[str, str], name: str, default: int, problems: list[str]) -> int:
    """Return ``name`` as a non-negative integer, noting a problem when it is not one."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        problems.append(f"{name} is {raw!r}, which is not a whole number")
        return default
    if value < 0:
        problems.append(f"{name} is {value}, but it cannot be negative")
        return default
    return value
