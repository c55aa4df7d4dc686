"""The recorded lifecycle of a backup: what state each backup is in, and who may change or
delete what. docs/backup-lifecycle.md draws it; this module is the only code that moves a
backup from one state to another.

States, each recorded in the backup's manifest (``<name>.json``) in every destination:

- ``running``: a run claimed the name by creating the manifest only if absent (so two runs
  never share a name) and recorded its owner (host, boot, pid and the pid's start time) and a
  lease it renews while it works. Its data is being written (a hidden partial file, or an
  invisible multipart upload).
- ``complete``: the data is published under its final name and described (size, sha256, row
  counts); verifications update the same record.
- ``adopted``: a published data file that had no valid manifest (the original script's
  backups, a lost manifest, a run that died between publishing and recording) was recorded
  by a prune; verification fills in its checksum and row counts.
- ``deleting``: retention decided to delete it; the data goes next, the manifest last, so a
  crash in between is finished by the next prune instead of resurrecting the backup.

Deletion rule: bakup deletes only (1) what retention decided, through ``deleting``; (2) the
unfinished work of a claim whose owner is provably dead (same machine and the process is gone,
or its lease ran out), and only that claim's partial data, never a published file; and (3) what
a live run wrote itself when it fails. Everything else, whatever it looks like, is kept.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from bakup import failpoints
from bakup.catalog import (
    ADOPTED,
    COMPLETE,
    DELETING,
    MANIFEST_FORMAT,
    NAME_PATTERN,
    RUNNING,
    Backup,
    backup_name,
    manifest_bytes,
    manifest_name,
    read_contents,
)
from bakup.errors import StorageError, Terminated
from bakup.lease import Lease, kept
from bakup.storage.base import Storage

log = logging.getLogger("bakup")


def _boot_id() -> str:
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id") as handle:
        return handle.read().strip()
    return ""


def _start_ticks(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks since boot, None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count from the last ')'.
    return int(stat.rsplit(")", 1)[1].split()[19])


@dataclass(frozen=True)
class Owner:
    """The process that holds a claim, precise enough to tell it from a later process that
    reuses its pid."""

    host: str
    boot_id: str
    pid: int
    started: int | None

    @classmethod
    def current(cls) -> Owner:
        """The calling process."""
        pid = os.getpid()
        return cls(socket.gethostname(), _boot_id(), pid, _start_ticks(pid))

    def is_gone(self) -> bool:
        """Whether this owner is provably dead: it ran on this machine since its last boot
        and no process with its pid and start time exists. False when it cannot be known (another
        machine or container): then only the lease decides."""
        if self.host != socket.gethostname() or self.boot_id != _boot_id() or not self.boot_id:
            return False
        return _start_ticks(self.pid) != self.started

    def to_json(self) -> dict[str, Any]:
        """Return the owner as recorded in a claim."""
        return {
            "host": self.host,
            "boot_id": self.boot_id,
            "pid": self.pid,
            "started": self.started,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Owner:
        """Read an owner back; raises KeyError, TypeError or ValueError if malformed."""
        started = data.get("started")
        return cls(
            str(data["host"]),
            str(data["boot_id"]),
            int(data["pid"]),
            None if started is None else int(started),
        )


@dataclass(frozen=True)
class Claim:
    """A run's claim on a backup name: recorded before any data is written."""

    name: str
    database: str
    created_at: datetime
    owner: Owner
    lease_expires_at: datetime

    def to_json(self) -> dict[str, Any]:
        """Return the claim as stored in the manifest."""
        return {
            "format": MANIFEST_FORMAT,
            "status": RUNNING,
            "name": self.name,
            "database": self.database,
            "created_at": self.created_at.isoformat(),
            "owner": self.owner.to_json(),
            "lease_expires_at": self.lease_expires_at.isoformat(),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Claim:
        """Read a claim back; raises KeyError, TypeError or ValueError if malformed."""
        return cls(
            name=str(data["name"]),
            database=str(data.get("database", "")),
            created_at=datetime.fromisoformat(data["created_at"]),
            owner=Owner.from_json(data["owner"]),
            lease_expires_at=datetime.fromisoformat(data["lease_expires_at"]),
        )

    def is_dead(self, now: datetime) -> bool:
        """Whether the claim's owner is provably gone or its lease ran out."""
        return self.owner.is_gone() or now > self.lease_expires_at


def claim(
    storage: Storage,
    database: str,
    compression: str,
    *,
    encrypted: bool,
    backup_format: str = "single",
) -> Claim:
    """Claim a fresh backup name in ``storage`` for a run starting now.

    Names have one-second resolution; when this second's name is taken (by a claim, a backup
    or the original script's file), the next second's is tried. Returns the claim, recorded.
    Raises StorageError if the claim cannot be written.
    """
    owner = Owner.current()
    while True:
        now = datetime.now(UTC).replace(microsecond=0)
        name = backup_name(now, compression, encrypted=encrypted, backup_format=backup_format)
        record = Claim(name, database, now, owner, Lease.expiry())
        if name not in storage.list_names() and storage.create_small(
            manifest_name(name), manifest_bytes(record.to_json())
        ):
            return record
        # Taken: wait for the next second rather than fail or overwrite.
        threading.Event().wait(1.0 - datetime.now(UTC).microsecond / 1_000_000)


@contextlib.contextmanager
def held(storage: Storage, record: Claim) -> Iterator[Lease]:
    """Keep ``record``'s lease alive while the block runs (a thread renews it); yields the
    lease, whose ``conclude`` the run calls before it records the backup complete. A renewal
    that fails is logged: the run goes on, and only a claim whose lease ran out can be swept."""

    def write(expires_at: datetime) -> None:
        renewed = replace(record, lease_expires_at=expires_at)
        storage.put_small(manifest_name(record.name), manifest_bytes(renewed.to_json()))

    with kept(Lease(f"the claim on {record.name}", record.lease_expires_at, write)) as lease:
        yield lease


def complete(storage: Storage, backup: Backup) -> None:
    """Record a published backup as complete: its manifest replaces the claim. Raises
    StorageError, or Terminated when SIGTERM came during the run (see errors.Terminated)."""
    Terminated.check()
    storage.put_small(
        manifest_name(backup.name), manifest_bytes(replace(backup, status=COMPLETE).to_json())
    )


def withdraw(storage: Storage, record: Claim) -> None:
    """End a live run's own claim after it failed: its data (already discarded by its writer)
    and then its claim record. Never raises: the next prune sweeps what is left once this
    process is gone."""
    with contextlib.suppress(StorageError):
        storage.discard_unfinished(record.name)
    with contextlib.suppress(StorageError):
        storage.delete(manifest_name(record.name))


@dataclass
class Sweep:
    """What one sweep of one destination did."""

    adopted: list[str]
    finished_deleting: list[str]
    removed: list[str]  # unfinished work of dead claims
    live: set[str]  # names whose claims are alive: their uploads are left alone


def sweep(storage: Storage, database: str, now: datetime | None = None, target: str = "") -> Sweep:
    """Bring one destination's records up to date, deleting only what the rule allows.

    - a claim whose owner is provably dead: its partial data is removed and its record
      deleted; if it had published its data, the backup is adopted instead;
    - a backup left ``deleting`` by an interrupted prune: its deletion is finished;
    - a published data file without a valid manifest: recorded as adopted (an unreadable
      manifest is kept aside, never overwritten, so nothing is deleted because of it);
    - a partial file with no claim at all (an older bakup's leftover): removed if no live
      process holds it.
    - the temporary file of a small write (a manifest, a chunk) whose writer died mid-write:
      removed once no live process holds it.

    Given the destination (not a MultiStorage) and the database's name. Returns what was done.
    Raises StorageError when the destination cannot be read or changed.
    """
    now = now or datetime.now(UTC)
    contents = read_contents(storage, database, target)
    done = Sweep([], [], [], set())
    for name, raw in contents.claims.items():
        try:
            record = Claim.from_json(raw)
        except (KeyError, TypeError, ValueError):
            continue  # an unreadable claim is kept: nothing proves it dead
        if not record.is_dead(now):
            done.live.add(name)
            continue
        if name in contents.data:
            _adopt(storage, name, database, "its run died after publishing it", replace_claim=True)
            done.adopted.append(name)
            continue
        storage.discard_unfinished(name)
        storage.delete(manifest_name(name))
        done.removed.append(name)
    for name, backup in contents.records.items():
        if backup.status == DELETING:
            storage.delete(name)
            storage.delete(manifest_name(name))
            done.finished_deleting.append(name)
    for backup in contents.backups:
        if backup.status != "unrecorded" or backup.name in contents.unreadable:
            continue
        if _adopt(storage, backup.name, database, "found without a manifest"):
            done.adopted.append(backup.name)
    for name in storage.unfinished_names():
        if not NAME_PATTERN.match(name) or name in contents.claims or name in done.live:
            continue  # (a manifest being written is no backup's data)
        # A claim is recorded before its partial file exists and deleted after it is gone:
        # read it again, so a run that started since the listing is never touched.
        with contextlib.suppress(FileNotFoundError):
            storage.get_small(manifest_name(name))
            continue
        if storage.discard_unfinished(name):
            done.removed.append(name)
    for temporary in storage.discard_abandoned_temporaries():
        log.info("Removed the temporary file of an interrupted write: %s", temporary)
    return done


def _adopt(
    storage: Storage, name: str, database: str, why: str, *, replace_claim: bool = False
) -> bool:
    """Record the published data ``name`` as an adopted backup. Without ``replace_claim`` the
    record is created only if no manifest exists, so a run that completes meanwhile keeps
    its own. Returns whether a record was written."""
    from bakup.catalog import unrecorded_backup

    backup = unrecorded_backup(name, storage.size(name), database, why)
    adopted = replace(backup, status=ADOPTED)
    payload = manifest_bytes(adopted.to_json())
    if replace_claim:
        storage.put_small(manifest_name(name), payload)
        written = True
    else:
        written = storage.create_small(manifest_name(name), payload)
    if written:
        log.info("Adopted %s (%s): listed, restorable and kept by retention", name, why)
    return written


def retire(storage: Storage, backup: Backup) -> None:
    """Delete a backup that retention let go: record ``deleting``, delete the data, then the
    manifest. Raises StorageError; an interrupted retirement is finished by the next sweep."""
    storage.put_small(
        manifest_name(backup.name), manifest_bytes(replace(backup, status=DELETING).to_json())
    )
    failpoints.reach("retiring")
    storage.delete(backup.name)
    failpoints.reach("retired-data")
    storage.delete(manifest_name(backup.name))


def record_verification(storage: Storage, backup: Backup) -> bool:
    """Write ``backup``'s verification into its manifest, unless its data is gone or
    retention has started deleting it since it was read. An unreadable manifest is kept aside
    (``.<manifest>.unreadable``) before the verified description replaces it. Returns whether
    it was written. Raises StorageError."""
    if backup.name not in storage.list_names():
        return False
    try:
        raw: bytes | None = storage.get_small(manifest_name(backup.name))
    except FileNotFoundError:
        raw = None
    if raw is not None:
        try:
            current = json.loads(raw)
        except ValueError:
            current = None
        if isinstance(current, dict) and current.get("status") in (DELETING, RUNNING):
            return False
        if not _valid(current):
            storage.put_small(f".{manifest_name(backup.name)}.unreadable", raw)
    status = COMPLETE if backup.status == COMPLETE else ADOPTED
    storage.put_small(
        manifest_name(backup.name), manifest_bytes(replace(backup, status=status).to_json())
    )
    return True


def _valid(data: Any) -> bool:
    try:
        Backup.from_json(data)
    except (ValueError, TypeError):
        return False
    return True
