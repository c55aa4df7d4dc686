"""Backups and their manifests: naming, the manifest's content, and listing what is complete.

Each backup is a data file named like the original script's (``postgres_backup_YYYYMMDD_HHMMSS
.sql.gz``, UTC) and a JSON manifest beside it (``<data name>.json``), written last. A data file
without its manifest is an unfinished backup: it is never listed, restored, counted or pruned.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bakup.compression import get_compression
from bakup.errors import BackupNotFound, StorageError
from bakup.storage.base import Storage

log = logging.getLogger(__name__)

PREFIX = "postgres_backup_"
MANIFEST_SUFFIX = ".json"
MANIFEST_FORMAT = "bakup-manifest/1"
NAME_PATTERN = re.compile(r"^postgres_backup_(\d{8}_\d{6})\.sql(\.gz|\.zst)?(\.age)?$")


def backup_name(created_at: datetime, compression: str, *, encrypted: bool = False) -> str:
    """Return the data file name for a backup started at ``created_at`` (converted to UTC);
    encrypted backups end in ``.age``."""
    stamp = created_at.astimezone(UTC).strftime("%Y%m%d_%H%M%S")
    age = ".age" if encrypted else ""
    return f"{PREFIX}{stamp}.sql{get_compression(compression).extension}{age}"


def manifest_name(name: str) -> str:
    """Return the manifest's name for the data file ``name``."""
    return name + MANIFEST_SUFFIX


@dataclass(frozen=True)
class Backup:
    """One complete backup, as its manifest describes it."""

    name: str
    database: str
    created_at: datetime
    size_bytes: int
    raw_size_bytes: int
    sha256: str
    compression: str
    duration_seconds: float
    pg_dump_version: str
    server_version: str
    archive_version: str
    source: str
    table_row_counts: dict[str, int] = field(default_factory=dict)
    compression_level: int | None = None
    finished_at: datetime | None = None
    verified: bool | None = None
    verified_at: datetime | None = None
    verification: dict[str, Any] | None = None
    encrypted: bool = False
    bakup_version: str = ""

    def to_json(self) -> dict[str, Any]:
        """Return the manifest as JSON-ready data (times in ISO 8601 UTC)."""
        data = asdict(self)
        data["format"] = MANIFEST_FORMAT
        for key in ("created_at", "finished_at", "verified_at"):
            if data[key] is not None:
                data[key] = _iso(data[key])
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Backup:
        """Build a Backup from manifest data; raises ValueError or KeyError if malformed."""
        if data.get("format") != MANIFEST_FORMAT:
            raise ValueError(f"unknown manifest format {data.get('format')!r}")
        known = {name for name in cls.__dataclass_fields__}
        values = {key: value for key, value in data.items() if key in known}
        for key in ("created_at", "finished_at", "verified_at"):
            if values.get(key) is not None:
                values[key] = datetime.fromisoformat(values[key])
        return cls(**values)

    def summary_json(self) -> dict[str, Any]:
        """Return the fields ``bakup list --json`` prints for this backup."""
        data = self.to_json()
        data.pop("format")
        data.pop("table_row_counts")
        data["tables"] = len(self.table_row_counts)
        return data

    def with_verification(self, ok: bool, at: datetime, details: dict[str, Any]) -> Backup:
        """Return a copy that records a verification result."""
        return replace(self, verified=ok, verified_at=at, verification=details)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def write_manifest(storage: Storage, backup: Backup) -> None:
    """Write the manifest of ``backup`` beside its data. Raises StorageError."""
    payload = json.dumps(backup.to_json(), indent=2, sort_keys=True).encode() + b"\n"
    storage.put_small(manifest_name(backup.name), payload)


def scan(storage: Storage) -> tuple[list[Backup], dict[str, bool]]:
    """Read the storage's contents.

    Returns the complete backups (oldest first) and, for every data file, whether it has a
    manifest. A manifest that cannot be read is logged and its backup left out of both lists,
    so nothing acts on it. Raises StorageError if the storage cannot be listed.
    """
    names = set(storage.list_names())
    backups: list[Backup] = []
    has_manifest: dict[str, bool] = {}
    for name in sorted(names):
        if not NAME_PATTERN.match(name):
            continue
        if manifest_name(name) not in names:
            has_manifest[name] = False
            continue
        try:
            data = json.loads(storage.get_small(manifest_name(name)))
            backups.append(Backup.from_json(data))
            has_manifest[name] = True
        except (ValueError, KeyError, TypeError, FileNotFoundError) as error:
            log.warning("WARNING: ignoring %s: its manifest is unreadable (%s)", name, error)
    backups.sort(key=lambda backup: (backup.created_at, backup.name))
    return backups, has_manifest


def list_backups(storage: Storage) -> list[Backup]:
    """Return the complete backups in ``storage``, oldest first. Raises StorageError."""
    return scan(storage)[0]


def find_backup(storage: Storage, name: str) -> Backup:
    """Return the complete backup called ``name`` (``latest`` means the newest).

    Raises BackupNotFound when there is none, StorageError if the storage cannot be read.
    """
    backups = list_backups(storage)
    if name == "latest":
        if not backups:
            raise BackupNotFound(f"there are no complete backups in {storage.describe()}")
        return backups[-1]
    for backup in backups:
        if backup.name == name or manifest_name(backup.name) == name:
            return backup
    raise BackupNotFound(
        f"no complete backup named {name!r} in {storage.describe()}: run `bakup list` to see them"
    )


def delete_backup(storage: Storage, backup: Backup) -> None:
    """Delete a backup: its manifest first, so an interrupted delete never leaves a listed
    backup without data. Raises StorageError."""
    storage.delete(manifest_name(backup.name))
    storage.delete(backup.name)


__all__ = [
    "Backup",
    "BackupNotFound",
    "StorageError",
    "backup_name",
    "delete_backup",
    "find_backup",
    "list_backups",
    "manifest_name",
    "scan",
    "write_manifest",
]
