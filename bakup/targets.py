"""The databases bakup backs up ("targets"), each with its own schedule, retention, compression
and folder.

With only DATABASE_URL there is one target and the original script's layout stays as it was:
backups directly in BACKUP_DIR. A TOML file named by BAKUP_CONFIG lists several; each gets the
folder ``BACKUP_DIR/<name>/`` and inherits what it does not set from the environment::

    [[targets]]
    name = "shop"
    url_env = "SHOP_DATABASE_URL"   # or: url = "postgresql://..."
    schedule = "0 3 * * *"
    retention_days = 14
    compression = "zstd"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bakup.catalog import BACKUP_FORMATS
from bakup.compression import REGISTRY
from bakup.dburl import ConnectionParams, DatabaseUrlError, parse_database_url
from bakup.errors import ConfigError
from bakup.retention import RetentionPolicy
from bakup.schedule import Schedule, ScheduleError, parse_schedule

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_RETENTION_KEYS = ("retention_days", "max_backups", "keep_daily", "keep_weekly", "keep_monthly")
_KNOWN_KEYS = {
    "name",
    "url",
    "url_env",
    "schedule",
    "compression",
    "compression_level",
    "backup_format",
    *_RETENTION_KEYS,
}


@dataclass(frozen=True)
class Target:
    """One database to back up, and how."""

    name: str
    database: ConnectionParams | None
    backup_dir: Path
    retention: RetentionPolicy
    compression: str
    compression_level: int | None
    schedule: Schedule
    storage_urls: tuple[str, ...] = ()  # STORAGE_URL's destinations; empty: backup_dir
    backup_format: str = "single"  # BACKUP_FORMAT: "single" file or "dedup" chunks

    @property
    def location(self) -> str | Path | tuple[str, ...]:
        """Where this database's backups are: its folder, one STORAGE_URL destination, or
        several (every backup goes to all of them)."""
        if not self.storage_urls:
            return self.backup_dir
        return self.storage_urls[0] if len(self.storage_urls) == 1 else self.storage_urls

    def require_database(self) -> ConnectionParams:
        """Return the database's connection; raises ConfigError when its URL is not set."""
        if self.database is None:
            raise ConfigError(
                ["DATABASE_URL is not set: set it to postgresql://user:password@host:5432/dbname"]
            )
        return self.database


def single_target(defaults: Target) -> Target:
    """Return the one target of a DATABASE_URL-only configuration, named after its database."""
    name = defaults.database.dbname if defaults.database else defaults.name
    return replace(defaults, name=name)


def load_targets_file(
    path: Path, defaults: Target, env: Mapping[str, str], problems: list[str]
) -> list[Target]:
    """Read the targets listed in the TOML file at ``path``.

    Given the file, the environment-derived defaults, the environment (for ``url_env``) and a
    list to which every problem found is appended (each naming the file and the key); returns
    the targets that could be read.
    """
    label = f"BAKUP_CONFIG {path}"
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        problems.append(f"{label}: cannot read it ({error.strerror})")
        return []
    except tomllib.TOMLDecodeError as error:
        problems.append(f"{label}: not valid TOML ({error})")
        return []
    entries = document.get("targets")
    if not isinstance(entries, list) or not entries:
        problems.append(f"{label}: add at least one [[targets]] table")
        return []
    targets: list[Target] = []
    seen: set[str] = set()
    for index, entry in enumerate(entries):
        where = f"{label}: targets[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where} must be a table")
            continue
        name = entry.get("name")
        if isinstance(name, str) and name in seen:
            problems.append(f"{where}: the name {name!r} is used twice")
            continue
        seen.add(str(name))
        target = _read_target(entry, where, defaults, env, problems)
        if target is not None:
            targets.append(target)
    return targets


def _read_target(
    entry: dict[str, Any],
    where: str,
    defaults: Target,
    env: Mapping[str, str],
    problems: list[str],
) -> Target | None:
    before = len(problems)
    for key in sorted(set(entry) - _KNOWN_KEYS):
        problems.append(f"{where}: unknown key {key!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        problems.append(f"{where}.name must be letters, digits, '.', '_' or '-' (got {name!r})")
        name = "?"
    where = f"{where} ({name})"

    database = None
    if ("url" in entry) == ("url_env" in entry):
        problems.append(f"{where}: set exactly one of url and url_env")
    elif "url_env" in entry:
        variable = str(entry["url_env"])
        url = env.get(variable, "")
        if not url:
            problems.append(f"{where}.url_env: the variable {variable} is not set")
        else:
            database = _parse_url(url, variable, problems)
    else:
        database = _parse_url(str(entry["url"]), f"{where}.url", problems)

    schedule = defaults.schedule
    if "schedule" in entry:
        try:
            schedule = parse_schedule(str(entry["schedule"]), name=f"{where}.schedule")
        except ScheduleError as error:
            problems.append(str(error))

    retention = defaults.retention
    for key in _RETENTION_KEYS:
        if key in entry:
            value = entry[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                problems.append(f"{where}.{key} must be a whole number >= 0 (got {value!r})")
            else:
                retention = replace(retention, **{key: value})

    compression = str(entry.get("compression", defaults.compression))
    level = entry.get(
        "compression_level", defaults.compression_level if "compression" not in entry else None
    )
    if compression not in REGISTRY:
        problems.append(
            f"{where}.compression is {compression!r}: use one of {', '.join(sorted(REGISTRY))}"
        )
    elif level is not None and level not in REGISTRY[compression].levels:
        levels = REGISTRY[compression].levels
        problems.append(
            f"{where}.compression_level {level!r}: "
            f"{compression} takes {levels.start} to {levels.stop - 1}"
        )

    backup_format = str(entry.get("backup_format", defaults.backup_format))
    if backup_format not in BACKUP_FORMATS:
        problems.append(
            f"{where}.backup_format is {backup_format!r}: use one of {', '.join(BACKUP_FORMATS)}"
        )

    if len(problems) > before:
        return None
    return Target(
        name=name,
        database=database,
        storage_urls=tuple(f"{url.rstrip('/')}/{name}" for url in defaults.storage_urls),
        backup_dir=defaults.backup_dir / name,
        retention=retention,
        compression=compression,
        compression_level=level,
        schedule=schedule,
        backup_format=backup_format,
    )


def _parse_url(url: str, name: str, problems: list[str]) -> ConnectionParams | None:
    try:
        return parse_database_url(url, name=name)
    except DatabaseUrlError as error:
        problems.append(str(error))
        return None
