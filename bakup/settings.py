"""All of bakup's configuration, read from the environment and checked at once.

Variables keep the original backup script's names and defaults (DATABASE_URL, BACKUP_DIR,
RETENTION_DAYS=30, MAX_BACKUPS=30). Any secret variable can instead be read from a file named by
``<NAME>_FILE`` (Docker and Kubernetes secrets). Every problem is collected and reported
together, each naming its variable, so one run shows everything to fix.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bakup.compression import REGISTRY
from bakup.dburl import ConnectionParams, DatabaseUrlError, parse_database_url
from bakup.errors import ConfigError
from bakup.retention import RetentionPolicy

DEFAULT_BACKUP_DIR = "./backups"

# name -> (default, meaning): the single source for validation and for `bakup check`'s output.
INTEGER_VARIABLES: dict[str, tuple[int, str]] = {
    "RETENTION_DAYS": (30, "delete backups older than this many days (0: no age limit)"),
    "MAX_BACKUPS": (30, "keep at most this many backups (0: no count limit)"),
    "KEEP_DAILY": (0, "also keep the newest backup of each of this many recent days"),
    "KEEP_WEEKLY": (0, "also keep the newest backup of each of this many recent ISO weeks"),
    "KEEP_MONTHLY": (0, "also keep the newest backup of each of this many recent months"),
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
    problems: tuple[str, ...] = field(default=(), compare=False)

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
        url = _read_secret(env, "DATABASE_URL", problems)
        if url:
            try:
                database = parse_database_url(url)
            except DatabaseUrlError as error:
                problems.append(str(error))
        elif require_database:
            problems.append(
                "DATABASE_URL is not set: set it to postgresql://user:password@host:5432/dbname"
            )

        backup_dir = Path(env.get("BACKUP_DIR") or DEFAULT_BACKUP_DIR)

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

        pg_bin_dir = None
        if env.get("PG_BIN_DIR"):
            pg_bin_dir = Path(env["PG_BIN_DIR"])
            if not pg_bin_dir.is_dir():
                problems.append(f"PG_BIN_DIR is {str(pg_bin_dir)!r}, which is not a directory")

        if problems:
            raise ConfigError(problems)
        return cls(database, backup_dir, retention, compression, level, pg_bin_dir)

    def require_database(self) -> ConnectionParams:
        """Return the database to back up; raises ConfigError when DATABASE_URL is unset."""
        if self.database is None:
            raise ConfigError(
                ["DATABASE_URL is not set: set it to postgresql://user:password@host:5432/dbname"]
            )
        return self.database


def _read_secret(env: Mapping[str, str], name: str, problems: list[str]) -> str:
    """Return ``name`` from the environment, or the contents of the file ``<name>_FILE`` names."""
    value = env.get(name, "")
    file_name = env.get(f"{name}_FILE", "")
    if value and file_name:
        problems.append(f"{name} and {name}_FILE are both set: keep one")
        return ""
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
