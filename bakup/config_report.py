"""`bakup config`: every environment variable bakup reads (bakup.variables), its effective value
and where that value came from (the environment, a ``NAME_FILE``, the BAKUP_CONFIG file, or the
default), with every secret hidden.

Secrets are hidden twice: each value is shown by its kind (a URL without its password, a
webhook URL as scheme://host/***, a key not at all), and the finished text is passed through
bakup.redaction.redact with every secret value known, so a secret that appears anywhere
else (a problem, a target's URL) is masked too.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from bakup.compression import REGISTRY
from bakup.errors import ConfigError
from bakup.redaction import MASK, redact
from bakup.settings import Settings
from bakup.variables import VARIABLES, Variable

# Query parameters whose values are credentials (presigned URLs, tokens, libpq passwords).
_SECRET_QUERY = re.compile(
    r"(?P<head>[?&](?:[a-z_-]*password|[a-z_-]*token|[a-z_-]*secret|[a-z_-]*key|sig|signature"
    r"|x-amz-credential|x-amz-signature|credential)=)[^&#\s]*",
    re.IGNORECASE,
)
# The per-target keys of a BAKUP_CONFIG file and the variable each one overrides.
_TARGET_KEYS = {
    "schedule": "BACKUP_SCHEDULE",
    "retention_days": "RETENTION_DAYS",
    "max_backups": "MAX_BACKUPS",
    "keep_daily": "KEEP_DAILY",
    "keep_weekly": "KEEP_WEEKLY",
    "keep_monthly": "KEEP_MONTHLY",
    "compression": "COMPRESSION",
    "compression_level": "COMPRESSION_LEVEL",
}


@dataclass(frozen=True)
class Entry:
    """One variable's effective value (already made safe to show) and its origin."""

    variable: Variable
    value: str
    source: str

    def to_json(self) -> dict[str, Any]:
        """Return the entry as `bakup config --json` prints it."""
        return {
            "name": self.variable.name,
            "group": self.variable.group,
            "value": self.value or None,
            "source": self.source,
            "default": self.variable.default or None,
            "meaning": self.variable.meaning,
            "secret": self.variable.secrecy != "plain",
        }


@dataclass(frozen=True)
class Report:
    """What `bakup config` shows: the variables, each configured database, the problems."""

    entries: list[Entry]
    targets: list[dict[str, Any]]
    problems: list[str]
    secrets: list[str]

    def text(self) -> str:
        """The report for people, secrets masked."""
        lines = ["bakup configuration: value (where it came from); secrets are shown as ***"]
        group = ""
        width = max(len(entry.variable.name) for entry in self.entries)
        for entry in self.entries:
            if entry.variable.group != group:
                group = entry.variable.group
                lines += ["", f"{group}:"]
            name = entry.variable.name.ljust(width)
            if entry.value:
                lines.append(f"  {name}  {entry.value}  ({entry.source})")
            else:
                lines.append(f"  {name}  (not set)")
            default = entry.variable.default
            shown = f"; default: {default}" if default and entry.source != "default" else ""
            lines.append(f"  {''.ljust(width)}    {entry.variable.meaning}{shown}")
        if self.targets:
            lines += ["", "databases:"]
            for target in self.targets:
                lines.append(f"  {target['name']}: {target['database']}")
                for key, (value, source) in target["settings"].items():
                    lines.append(f"    {key}: {value} ({source})")
        if self.problems:
            lines += ["", "problems:"] + [f"  {problem}" for problem in self.problems]
        return self.mask("\n".join(lines) + "\n")

    def json(self) -> str:
        """The report as JSON for scripts, secrets masked."""
        document = {
            "variables": [entry.to_json() for entry in self.entries],
            "databases": [
                {
                    "name": target["name"],
                    "database": target["database"],
                    "settings": {
                        key: {"value": value, "source": source}
                        for key, (value, source) in target["settings"].items()
                    },
                }
                for target in self.targets
            ],
            "problems": self.problems,
        }
        return json.dumps(self._masked(document), indent=2) + "\n"

    def _masked(self, value: Any) -> Any:
        """``value`` (JSON data) with every string masked one by one: masking the serialised
        text could cut through its quotes."""
        if isinstance(value, str):
            return self.mask(value)
        if isinstance(value, list):
            return [self._masked(item) for item in value]
        if isinstance(value, dict):
            return {key: self._masked(item) for key, item in value.items()}
        return value

    def mask(self, text: str) -> str:
        """``text`` with every known secret (and every URL password) replaced by ***."""
        return redact(text, self.secrets)


def build_report(env: Mapping[str, str], *, include_internal: bool = False) -> Report:
    """Read the configuration the way bakup does and describe it.

    Given the environment and whether to list bakup's internal variables too; returns the
    report, whose problems list every configuration error (as `bakup check` would report
    them). Raises nothing for an invalid configuration: showing it is the point.
    """
    secrets: list[str] = []
    entries = []
    for variable in VARIABLES:
        if variable.internal and not include_internal:
            continue
        raw, source = _raw_value(env, variable)
        if raw and variable.secrecy != "plain":
            secrets += _secret_parts(raw, variable)
        entries.append(Entry(variable, _shown(raw, variable), source))

    problems: list[str] = []
    settings = None
    try:
        settings = Settings.from_env(env, require_database=False)
    except ConfigError as error:
        problems += error.problems
    try:
        from notifications.config import NotifySettings

        NotifySettings.from_env(env)
    except ConfigError as error:
        problems += error.problems

    targets: list[dict[str, Any]] = []
    if settings is not None:
        entries = [_derived(entry, settings) for entry in entries]
        targets = _describe_targets(env, settings, entries, secrets)
    return Report(entries, targets, problems, secrets)


def _raw_value(env: Mapping[str, str], variable: Variable) -> tuple[str, str]:
    """The variable's raw value and where it came from (no default applied)."""
    value = env.get(variable.name, "")
    if value:
        return value, "environment"
    file_name = env.get(f"{variable.name}_FILE", "") if variable.from_file else ""
    if file_name:
        try:
            return (
                Path(file_name).read_text(encoding="utf-8").strip(),
                f"file {file_name}, from {variable.name}_FILE",
            )
        except OSError as error:
            return "", f"{variable.name}_FILE {file_name} cannot be read ({error.strerror})"
    return "", "default" if variable.default else "not set"


def _shown(raw: str, variable: Variable) -> str:
    """The value as `bakup config` shows it: the default when unset, secrets hidden."""
    if not raw:
        return variable.default
    if variable.secrecy == "secret":
        return MASK
    if variable.secrecy == "url-token":
        return " ".join(_url_without_token(url) for url in raw.split())
    if variable.secrecy == "url":
        return _SECRET_QUERY.sub(rf"\g<head>{MASK}", redact(raw))
    return raw


def _url_without_token(url: str) -> str:
    """``scheme://host[:port]/***``: enough to tell which service, nothing that authorises."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASK
    if not parts.scheme or not host:
        return MASK
    return f"{parts.scheme}://{host}{port}/{MASK}"


def _secret_parts(raw: str, variable: Variable) -> list[str]:
    """The strings of ``raw`` that must never be shown: the whole value, each URL's password
    (as written and decoded), and every secret query parameter's value."""
    parts = [raw] if variable.secrecy != "url" else []
    for url in raw.split():
        match = re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@]*:([^\s@]*)@", url)
        if match and match.group(1):
            parts += [match.group(1), unquote(match.group(1))]
        for query in _SECRET_QUERY.finditer(url):
            value = url[query.end("head") : query.end()]
            parts += [value, unquote(value)]
        if variable.secrecy == "url-token":
            try:
                split = urlsplit(url)
            except ValueError:
                continue
            parts += [split.path.strip("/"), split.query]
    return [part for part in parts if part]


def _derived(entry: Entry, settings: Settings) -> Entry:
    """An entry whose default bakup works out from other settings, shown as worked out."""
    if entry.variable.name == "BEAT_SCHEDULE_FILE" and entry.source == "default":
        return Entry(entry.variable, str(settings.beat_schedule_file), "default")
    return entry


def _describe_targets(
    env: Mapping[str, str], settings: Settings, entries: list[Entry], secrets: list[str]
) -> list[dict[str, Any]]:
    """Each database bakup backs up: where its URL comes from, where its backups go, and its
    schedule, retention and compression with their origin (BAKUP_CONFIG, or the variable)."""
    origin = {entry.variable.name: entry.source for entry in entries}
    file_entries: dict[str, dict[str, Any]] = {}
    config_file = env.get("BAKUP_CONFIG")
    if config_file:
        try:
            document = tomllib.loads(Path(config_file).read_text(encoding="utf-8"))
            file_entries = {
                str(item.get("name")): item
                for item in document.get("targets", [])
                if isinstance(item, dict)
            }
        except (OSError, tomllib.TOMLDecodeError):  # Settings has read it already
            pass
    described = []
    for target in settings.targets:
        entry = file_entries.get(target.name, {})
        if target.database is not None:
            secrets += [target.database.password or "", *target.database.secrets.values()]
        if "url_env" in entry:
            where = f"from {entry['url_env']}"
        elif "url" in entry:
            where = "from BAKUP_CONFIG"
        else:
            where = f"from DATABASE_URL ({origin.get('DATABASE_URL', 'not set')})"
        database = target.database.display() if target.database else "(no database URL)"
        retention = target.retention
        values = {
            "schedule": target.schedule.text,
            "retention_days": retention.retention_days,
            "max_backups": retention.max_backups,
            "keep_daily": retention.keep_daily,
            "keep_weekly": retention.keep_weekly,
            "keep_monthly": retention.keep_monthly,
            "compression": target.compression,
            "compression_level": target.compression_level,
        }
        stored_by = "STORAGE_URL" if target.storage_urls else "BACKUP_DIR"
        settings_shown: dict[str, tuple[str, str]] = {
            "backups in": (
                _shown(_location(target.location), _STORAGE),
                f"{stored_by}: {origin[stored_by]}",
            ),
        }
        if values["compression_level"] is None and target.compression in REGISTRY:
            values["compression_level"] = REGISTRY[target.compression].default_level
        for key, value in values.items():
            source = "BAKUP_CONFIG" if key in entry else origin[_TARGET_KEYS[key]]
            settings_shown[key] = (str(value), source)
        described.append(
            {"name": target.name, "database": f"{database} {where}", "settings": settings_shown}
        )
    return described


_STORAGE = Variable("", "", "", "", "url")


def _location(location: str | Path | tuple[str, ...]) -> str:
    return " ".join(location) if isinstance(location, tuple) else str(location)
