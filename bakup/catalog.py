"""Backups and their manifests: naming, the manifest's content, and reading what is stored.

Each backup is a data file named like the original script's (``postgres_backup_YYYYMMDD_HHMMSS
.sql.gz``, UTC) and a JSON manifest beside it (``<data name>.json``) that records its state
(see docs/backup-lifecycle.md and ``bakup.lifecycle``): ``running`` while a run owns the name,
``complete`` once the data is published and described, ``adopted`` for a data file bakup found
without a manifest (the original script's backups, or a manifest that was lost), ``deleting``
while retention removes it. Reading never changes anything: a data file without a valid
manifest is shown as adopted, never hidden and never deleted because of it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
from dataclasses import MISSING, asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from bakup.compression import get_compression
from bakup.errors import BackupNotFound, StorageError
from bakup.storage.base import Storage

log = logging.getLogger(__name__)

PREFIX = "postgres_backup_"
MANIFEST_SUFFIX = ".json"
MANIFEST_FORMAT = "bakup-manifest/1"
NAME_PATTERN = re.compile(r"^postgres_backup_(\d{8}_\d{6})\.sql(\.gz|\.zst|\.dedup)?(\.age)?$")
# BACKUP_FORMAT: one compressed file per backup, or an index of deduplicated chunks.
SINGLE = "single"
DEDUP = "dedup"
BACKUP_FORMATS = (SINGLE, DEDUP)

RUNNING = "running"
COMPLETE = "complete"
ADOPTED = "adopted"
DELETING = "deleting"
# What a listing shows for a data file whose manifest is missing or unreadable: nothing is
# recorded yet; the next prune records it as adopted.
UNRECORDED = "unrecorded"
STATUSES = (RUNNING, COMPLETE, ADOPTED, DELETING)


def backup_name(
    created_at: datetime, compression: str, *, encrypted: bool = False, backup_format: str = SINGLE
) -> str:
    """Return the data file name for a backup started at ``created_at`` (converted to UTC):
    ``.sql`` and the compression's extension, then ``.age`` when encrypted; or ``.sql.dedup``
    for a deduplicated backup's index, encrypted or not."""
    stamp = created_at.astimezone(UTC).strftime("%Y%m%d_%H%M%S")
    if backup_format == DEDUP:  # the index is never encrypted (its chunks are)
        return f"{PREFIX}{stamp}.sql.dedup"
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
    status: str = COMPLETE
    note: str | None = None  # why a backup is adopted or unrecorded, for listings
    # The server's roles and other globals (bakup.globals): None when the backup has none.
    globals: dict[str, Any] | None = None
    # What the archive holds beyond row counts (schemas, extensions, large objects, each
    # table's data bytes), for ``bakup show``; None in manifests written before it existed.
    contents: dict[str, Any] | None = None
    # "dedup": the data file is an index of chunks (bakup.dedup); ``dedup`` holds its figures.
    backup_format: str = SINGLE
    dedup: dict[str, Any] | None = None

    @property
    def usable(self) -> bool:
        """Whether the backup may be restored, verified and counted: its data is published."""
        return self.status in (COMPLETE, ADOPTED, UNRECORDED)

    @property
    def described(self) -> bool:
        """Whether the manifest holds the backup's checksum and row counts (adopted backups
        get them from their first verification)."""
        return bool(self.sha256)

    @property
    def new_bytes(self) -> int | None:
        """What this backup itself added to storage: for a deduplicated one, the chunks it
        stored first plus its index; for a single file, its size. None when unknown (a
        deduplicated index found without its manifest)."""
        if self.backup_format != DEDUP:
            return self.size_bytes
        if self.dedup is None or not isinstance(self.dedup.get("new_bytes"), int):
            return None
        return int(self.dedup["new_bytes"]) + self.size_bytes

    @property
    def logical_bytes(self) -> int | None:
        """The size of the pg_dump archive the backup holds (what a restore reads), whatever
        its format; None until an adopted backup is described."""
        return self.raw_size_bytes if self.described else None

    def to_json(self) -> dict[str, Any]:
        """Return the manifest as JSON-ready data (times in ISO 8601 UTC)."""
        data = asdict(self)
        data["format"] = MANIFEST_FORMAT
        for key in ("created_at", "finished_at", "verified_at"):
            if data[key] is not None:
                data[key] = _iso(data[key])
        return data

    @classmethod
    def from_json(cls, data: Any) -> Backup:
        """Build a Backup from manifest data.

        Raises ManifestError (a ValueError) when ``data`` is not a manifest of this format, a
        field is missing or has the wrong type, or the status is unknown."""
        if not isinstance(data, dict):
            raise ManifestError(f"a manifest is a JSON object, not {type(data).__name__}")
        if data.get("format") != MANIFEST_FORMAT:
            raise ManifestError(f"unknown manifest format {data.get('format')!r}")
        known = {name for name in cls.__dataclass_fields__}
        values = {key: value for key, value in data.items() if key in known}
        missing = sorted(
            name
            for name, spec in cls.__dataclass_fields__.items()
            if name not in values and spec.default is MISSING and spec.default_factory is MISSING
        )
        if missing:
            raise ManifestError(f"missing {', '.join(missing)}")
        for key, types in _FIELD_TYPES.items():
            if key in values and not _is_instance(values[key], types):
                raise ManifestError(f"{key} is {values[key]!r}, not a {types[0].__name__}")
        counts = values.get("table_row_counts", {})
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in counts.values()):
            raise ManifestError("table_row_counts holds a value that is not a whole number")
        if values.get("status", COMPLETE) not in STATUSES:
            raise ManifestError(f"unknown status {values.get('status')!r}")
        if values.get("globals") is not None:
            _check_globals(values["globals"])
        for key in ("created_at", "finished_at", "verified_at"):
            if values.get(key) is not None:
                moment = datetime.fromisoformat(values[key])
                if moment.tzinfo is None:
                    raise ManifestError(f"{key} has no time zone")
                values[key] = moment
        return cls(**values)

    def summary_json(self) -> dict[str, Any]:
        """Return the fields ``bakup list --json`` prints for this backup."""
        data = self.to_json()
        data.pop("format")
        data.pop("table_row_counts")
        data["tables"] = len(self.table_row_counts)
        data.pop("contents")
        data["new_bytes"], data["logical_bytes"] = self.new_bytes, self.logical_bytes
        if self.globals is not None:  # what they are, not the data itself
            data["globals"] = {k: v for k, v in self.globals.items() if k != "data"}
        return data

    def with_verification(self, ok: bool, at: datetime, details: dict[str, Any]) -> Backup:
        """Return a copy that records a verification result."""
        return replace(self, verified=ok, verified_at=at, verification=details)


class ManifestError(ValueError):
    """A manifest that cannot be used: not JSON, not an object, a field missing or mistyped."""


# The JSON types each field must have (None allowed where listed); anything else makes the
# manifest unreadable rather than crashing whoever reads a field later (prune's arithmetic).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "name": (str,),
    "database": (str,),
    "created_at": (str,),
    "size_bytes": (int,),
    "raw_size_bytes": (int,),
    "sha256": (str,),
    "compression": (str,),
    "duration_seconds": (float, int),
    "pg_dump_version": (str,),
    "server_version": (str,),
    "archive_version": (str,),
    "source": (str,),
    "table_row_counts": (dict,),
    "compression_level": (int, type(None)),
    "finished_at": (str, type(None)),
    "verified": (bool, type(None)),
    "verified_at": (str, type(None)),
    "verification": (dict, type(None)),
    "encrypted": (bool,),
    "bakup_version": (str,),
    "status": (str,),
    "note": (str, type(None)),
    "globals": (dict, type(None)),
    "contents": (dict, type(None)),
    "backup_format": (str,),
    "dedup": (dict, type(None)),
}

# The fields of a manifest's ``globals`` object and their JSON types.
_GLOBALS_TYPES: dict[str, tuple[type, ...]] = {
    "format": (str,),
    "compression": (str,),
    "encrypted": (bool,),
    "role_passwords": (bool,),
    "size_bytes": (int,),
    "raw_size_bytes": (int,),
    "sha256": (str,),
    "data": (str,),
}


def _check_globals(record: dict[str, Any]) -> None:
    """Check a manifest's ``globals`` object: every field there and well typed, the data
    base64 of the recorded size and sha256, and no role password unless encrypted. Raises
    ManifestError."""
    for key, types in _GLOBALS_TYPES.items():
        if key not in record:
            raise ManifestError(f"globals: missing {key}")
        if not _is_instance(record[key], types):
            raise ManifestError(f"globals: {key} is {record[key]!r:.40}, not a {types[0].__name__}")
    if record["role_passwords"] and not record["encrypted"]:
        raise ManifestError("globals: role passwords recorded without encryption")
    try:
        payload = base64.b64decode(record["data"], validate=True)
    except binascii.Error:
        raise ManifestError("globals: data is not base64") from None
    if len(payload) != record["size_bytes"]:
        raise ManifestError(f"globals: data is {len(payload)} bytes, not {record['size_bytes']}")
    if hashlib.sha256(payload).hexdigest() != record["sha256"]:
        raise ManifestError("globals: data does not match its sha256")


def _is_instance(value: Any, types: tuple[type, ...]) -> bool:
    # bool is an int in Python, never in a manifest.
    if isinstance(value, bool) and bool not in types:
        return False
    return isinstance(value, types)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def manifest_bytes(record: dict[str, Any]) -> bytes:
    """Return the stored form of a manifest (or claim) record."""
    return json.dumps(record, indent=2, sort_keys=True).encode() + b"\n"


def write_manifest(storage: Storage, backup: Backup) -> None:
    """Write (or replace) the manifest of ``backup`` beside its data. Raises StorageError."""
    storage.put_small(manifest_name(backup.name), manifest_bytes(backup.to_json()))


def created_at_of(name: str) -> datetime:
    """Return the start time encoded in a backup's name (UTC). Raises ValueError."""
    match = NAME_PATTERN.match(name)
    if match is None:
        raise ValueError(f"{name!r} is not a backup name")
    return datetime.strptime(match.group(1), "%Y%m%d_%H%M%S").replace(tzinfo=UTC)


def unrecorded_backup(name: str, size: int, database: str, note: str) -> Backup:
    """Describe a data file that has no valid manifest from its name alone: when it was
    taken, how it is compressed and whether it is encrypted. Its checksum and row counts are
    unknown until it is verified."""
    match = NAME_PATTERN.match(name)
    assert match is not None
    extension = match.group(2) or ""
    compression = {".gz": "gzip", ".zst": "zstd", "": "none", ".dedup": "zstd"}[extension]
    return Backup(
        name=name,
        database=database,
        created_at=created_at_of(name),
        size_bytes=size,
        raw_size_bytes=0,
        sha256="",
        compression=compression,
        duration_seconds=0.0,
        pg_dump_version="",
        server_version="",
        archive_version="",
        source="",
        encrypted=bool(match.group(3)),
        status=UNRECORDED,
        note=note,
        # A deduplicated index says nothing of encryption: its chunks tell (bakup.dedup.reader).
        backup_format=DEDUP if extension == ".dedup" else SINGLE,
    )


@dataclass
class Contents:
    """What one storage holds, read in one pass.

    ``backups``: every backup whose data is published, oldest first: complete and adopted
    ones from their manifests, and data files without a valid manifest as ``unrecorded``.
    ``records``: each valid manifest by data name, whatever its status (running claims
    included, as raw JSON in ``claims``). ``unreadable``: data name -> why its manifest
    cannot be used. ``data``: every data name present.
    """

    backups: list[Backup] = field(default_factory=list)
    records: dict[str, Backup] = field(default_factory=dict)
    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    unreadable: dict[str, str] = field(default_factory=dict)
    data: set[str] = field(default_factory=set)

    @property
    def recorded(self) -> list[Backup]:
        """The backups retention may act on: published, with a valid manifest of their own."""
        return [backup for backup in self.backups if backup.status in (COMPLETE, ADOPTED)]


_reported: set[tuple[str, str]] = set()


def read_contents(storage: Storage, database: str = "", target: str = "") -> Contents:
    """Read the storage's backups and the state each manifest records; changes nothing.

    Given the storage, the database name to show for backups found without a manifest and
    the target's name (for events; the database name when empty).
    A manifest that cannot be used is reported once per process (a warning and a
    ``manifest.unreadable`` event) and its data listed as unrecorded. Raises StorageError if
    the storage cannot be listed.
    """
    from bakup import events  # here: events is light, but keep catalog's imports minimal

    names = set(storage.list_names())
    contents = Contents(data={name for name in names if NAME_PATTERN.match(name)})
    described = {
        name.removesuffix(MANIFEST_SUFFIX)
        for name in names
        if name.endswith(MANIFEST_SUFFIX) and NAME_PATTERN.match(name.removesuffix(MANIFEST_SUFFIX))
    }
    for name in sorted(described):
        try:
            data = json.loads(storage.get_small(manifest_name(name)))
            if isinstance(data, dict) and data.get("status") == RUNNING:
                if not isinstance(data.get("owner"), dict):
                    raise ManifestError("a running claim without its owner")
                contents.claims[name] = data
                continue
            record = Backup.from_json(data)
            if record.name != name:
                raise ManifestError(f"it describes {record.name!r}")
        except FileNotFoundError:
            continue  # deleted since the listing: nothing to describe
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            contents.unreadable[name] = reason
            key = (storage.describe(), name)
            if name in contents.data and key not in _reported:
                _reported.add(key)
                log.warning(
                    "WARNING: the manifest of %s is unreadable (%s): the backup is listed as "
                    "unrecorded and never deleted for it; `bakup verify %s` rewrites it",
                    name,
                    reason,
                    name,
                )
                events.emit(
                    events.Event(
                        events.MANIFEST_UNREADABLE,
                        target or database,
                        error=f"the manifest of {name} is unreadable: {reason}",
                        details={"name": name},
                    )
                )
            continue
        contents.records[name] = record
    for name in sorted(contents.data):
        recorded = contents.records.get(name)
        if recorded is not None:
            if recorded.usable:
                contents.backups.append(recorded)
            continue
        if name in contents.claims:
            continue  # published by a run that has not recorded it yet, or died doing so
        note = (
            f"manifest unreadable ({contents.unreadable[name]})"
            if name in contents.unreadable
            else "no manifest"
        )
        try:
            size = storage.size(name)
        except FileNotFoundError:
            continue
        contents.backups.append(unrecorded_backup(name, size, database, note))
    contents.backups.sort(key=lambda backup: (backup.created_at, backup.name))
    return contents


def list_backups(storage: Storage, database: str = "", target: str = "") -> list[Backup]:
    """Return the backups in ``storage`` whose data is published, oldest first: complete,
    adopted and unrecorded ones. Raises StorageError."""
    return read_contents(storage, database, target).backups


def newest_recorded(storage: Storage, *, tries: int = 3) -> Backup | None:
    """Return the newest backup whose manifest records it published, reading at most
    ``tries`` manifests, newest first (far cheaper than list_backups on an object store), or
    None when none of them does. Unreadable manifests are skipped in silence: list_backups
    reports them. Raises StorageError if the storage cannot be listed."""
    names = set(storage.list_names())
    published = sorted(
        (name for name in names if NAME_PATTERN.match(name) and manifest_name(name) in names),
        key=lambda name: (created_at_of(name), name),
        reverse=True,
    )
    for name in published[:tries]:
        try:
            record = Backup.from_json(json.loads(storage.get_small(manifest_name(name))))
        except (FileNotFoundError, ValueError, TypeError, UnicodeDecodeError):
            continue
        if record.name == name and record.usable and record.status in (COMPLETE, ADOPTED):
            return record
    return None


def find_backup(storage: Storage, name: str, database: str = "", target: str = "") -> Backup:
    """Return the backup called ``name`` (``latest`` means the newest).

    Raises BackupNotFound when there is none, StorageError if the storage cannot be read.
    """
    backups = list_backups(storage, database, target)
    if name == "latest":
        if not backups:
            raise BackupNotFound(f"there are no complete backups in {storage.describe()}")
        return backups[-1]
    for backup in backups:
        if backup.name == name or manifest_name(backup.name) == name:
            return backup
    raise BackupNotFound(
        f"no backup named {name!r} in {storage.describe()}: run `bakup list` to see them"
    )


def newest_restore_test(backups: list[Backup]) -> tuple[Backup, float] | None:
    """The backup among ``backups`` whose successful test restore is the most recent (by when
    it was verified) and that restore's duration in seconds; None when none was restore-tested.
    A manifest written by hand with a non-number there is passed over."""
    tested = [
        backup
        for backup in backups
        if backup.verified
        and backup.verified_at is not None
        and isinstance((backup.verification or {}).get("restore_duration_seconds"), int | float)
    ]
    if not tested:
        return None
    newest = max(tested, key=lambda backup: backup.verified_at or backup.created_at)
    return newest, float((newest.verification or {})["restore_duration_seconds"])


__all__ = [
    "Backup",
    "BackupNotFound",
    "Contents",
    "StorageError",
    "backup_name",
    "find_backup",
    "list_backups",
    "manifest_name",
    "newest_restore_test",
    "read_contents",
    "write_manifest",
]
