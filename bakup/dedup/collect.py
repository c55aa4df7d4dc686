"""Garbage collection of chunks: delete what no backup references, never what one needs.

A chunk may be deleted only when no index in the storage names it (whatever that backup's
state: complete, adopted, unrecorded, being deleted) **and** no backup is being written: a
running backup decides that a chunk is already stored and skips it, so deleting it under its
feet would lose it. Both rules follow from recorded state:

- a collection records itself first, create-only, as ``gc-<id>.json`` in the chunk store (its
  owner and a lease), then reads the other collections' records and the backups' claims: any
  other live collection or live claim and it withdraws, to try again at the next prune;
- a deduplicated backup records its claim first, then looks for collection records: while a
  live one exists, the backup waits, and lists the chunk store only after it ends.

Whichever of the two writes its record second sees the other's, so a backup never trusts a
listing that a collection may still shrink. Records are created only if absent and then
rewritten only by their owner (renewing its lease, bakup.lease), deleted by their owner or, once
provably dead (same machine, process gone) or out of lease, by anyone: a live record is never
removed by someone else, and an owner acts only while its lease is held. A collection that
dies leaves its record behind, and the next collection deletes it.
A collection killed half way has deleted only unreferenced chunks; the next one finishes.
An index that cannot be read stops the collection: nothing is deleted on a guess.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from bakup import failpoints
from bakup.catalog import read_contents
from bakup.dedup.chunks import CHUNK_NAME
from bakup.dedup.reader import read_index
from bakup.errors import StorageError
from bakup.lease import Lease, kept
from bakup.lifecycle import Claim, Owner
from bakup.storage.base import Storage

log = logging.getLogger("bakup")

GC_NAME = re.compile(r"^gc-[0-9a-f]{16}\.json$")
GC_FORMAT = "bakup-chunk-gc/1"
# How long a backup waits for a live collection before it gives up (to be retried): a
# collection renews its lease while it works, so a long one is not taken for a dead one.
WAIT_TIMEOUT_SECONDS = 3600
WAIT_POLL_SECONDS = 2.0
DEDUP_SUFFIXES = (".sql.dedup",)


@dataclass
class Collection:
    """What one collection did in one chunk store."""

    store: str
    deleted: list[str] = field(default_factory=list)
    deleted_bytes: int = 0
    kept: int = 0
    stored_bytes: int = 0  # what the chunks still take
    skipped: str | None = None  # why nothing was collected


@dataclass(frozen=True)
class _Record:
    owner: Owner
    lease_expires_at: datetime

    def is_dead(self, now: datetime) -> bool:
        return self.owner.is_gone() or now > self.lease_expires_at

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "format": GC_FORMAT,
                "owner": self.owner.to_json(),
                "lease_expires_at": self.lease_expires_at.isoformat(),
            }
        ).encode()

    @classmethod
    def read(cls, chunks: Storage, name: str) -> _Record | None:
        """The collection record ``name``, None when it is gone. A record that cannot be
        read counts as a dead one."""
        try:
            data = json.loads(chunks.get_small(name))
            return cls(
                Owner.from_json(data["owner"]), datetime.fromisoformat(data["lease_expires_at"])
            )
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError):
            return cls(Owner("", "", 0, None), datetime.min.replace(tzinfo=UTC))


def _records(chunks: Storage) -> dict[str, _Record]:
    """The collection records in ``chunks``, by name."""
    found = {}
    for name in chunks.list_names():
        if GC_NAME.match(name):
            record = _Record.read(chunks, name)
            if record is not None:
                found[name] = record
    return found


def wait_for_collections(storage: Storage, *, timeout: float = WAIT_TIMEOUT_SECONDS) -> None:
    """Wait while a live collection holds any of ``storage``'s chunk stores. Called by a
    deduplicated backup after its claim is recorded and before it lists the chunks. Raises
    StorageError when a collection still runs after ``timeout`` seconds."""
    waited = 0.0
    for chunks in storage.chunk_storages():
        while True:
            now = datetime.now(UTC)
            if not any(not r.is_dead(now) for r in _records(chunks).values()):
                break
            if waited == 0.0:
                log.info("Waiting for the chunk collection in %s to end", chunks.describe())
            if waited >= timeout:
                raise StorageError(
                    f"a chunk collection in {chunks.describe()} is still running after "
                    f"{timeout:.0f} s: run the backup again once it has ended (the worker "
                    "retries it)",
                    stage="store",
                )
            threading.Event().wait(WAIT_POLL_SECONDS)
            waited += WAIT_POLL_SECONDS


def collect(storage: Storage, *, dry_run: bool = False) -> list[Collection]:
    """Delete the chunks of ``storage`` (one destination, or several) that no index names.

    Returns what each chunk store's collection did. Raises StorageError when the storage
    fails (what was deleted before stays deleted: it was unreferenced).
    """
    results = []
    for chunks in storage.chunk_storages():
        if not dry_run:
            for temporary in chunks.discard_abandoned_temporaries():
                log.info("Removed the temporary file of an interrupted write: %s", temporary)
        names = chunks.list_sizes()
        if not any(CHUNK_NAME.match(name) for name in names):
            continue  # no deduplicated backup here
        results.append(_collect_one(storage, chunks, names, dry_run=dry_run))
    return results


def _collect_one(
    storage: Storage, chunks: Storage, names: dict[str, int], *, dry_run: bool
) -> Collection:
    result = Collection(chunks.describe())
    if dry_run:
        result.deleted, result.skipped = _unreferenced(storage, names)
    else:
        _delete_unreferenced(storage, chunks, names, result)
    gone = set(result.deleted)
    kept_chunks = [n for n in names if CHUNK_NAME.match(n) and n not in gone]
    result.kept = len(kept_chunks)
    result.stored_bytes = sum(names[n] for n in kept_chunks)
    result.deleted_bytes = sum(names[n] for n in result.deleted)
    return result


def _delete_unreferenced(
    storage: Storage, chunks: Storage, names: dict[str, int], result: Collection
) -> None:
    """Record this collection, then delete the chunks of ``names`` that no index names, each
    only while the collection's lease is held (one that may look dead to others stops, and
    the next prune goes on); fills ``result``. Raises StorageError."""
    own = f"gc-{secrets.token_hex(8)}.json"
    owner = Owner.current()
    expires_at = Lease.expiry()
    if not _record_collection(chunks, own, _Record(owner, expires_at)):
        result.skipped = "another chunk collection is running"
        return

    def renew(new_expiry: datetime) -> None:
        chunks.put_small(own, _Record(owner, new_expiry).to_json())

    try:
        with kept(Lease("the chunk collection's record", expires_at, renew)) as lease:
            failpoints.reach("collecting")
            unreferenced, result.skipped = _unreferenced(storage, names)
            for name in unreferenced:
                if not lease.is_held():
                    result.skipped = (
                        "the collection's record could not be renewed in time: "
                        "the rest is collected at the next prune"
                    )
                    return
                chunks.delete(name)
                result.deleted.append(name)
                failpoints.reach("collected-one")
    finally:
        chunks.delete(own)


def _unreferenced(storage: Storage, names: dict[str, int]) -> tuple[list[str], str | None]:
    """The chunks of ``names`` that no index in ``storage`` names, and None; or nothing and
    why nothing may be collected now (a backup being written, an unreadable claim)."""
    contents = read_contents(storage)
    live = [name for name, data in contents.claims.items() if _claim_may_be_live(data)]
    if live:
        return [], f"a backup is being written ({live[0]}): collected at the next prune"
    broken_claims = [name for name in contents.unreadable if name not in contents.data]
    if broken_claims:
        return [], f"the manifest of {broken_claims[0]} is unreadable"
    referenced: set[str] = set()
    for name in sorted(contents.data):
        if not name.endswith(DEDUP_SUFFIXES):
            continue
        # Indexes name chunks by keyed hashes only: they are stored unencrypted, so a
        # collection needs no key.
        referenced.update(chunk for chunk, _ in read_index(storage.get_small(name), name))
    return sorted(n for n in names if CHUNK_NAME.match(n) and n not in referenced), None


def _claim_may_be_live(data: dict[str, Any]) -> bool:
    """Whether a backup claim may still be writing: yes unless it is provably dead. A claim
    that cannot be read counts as live: a collection never deletes on a guess."""
    try:
        return not Claim.from_json(data).is_dead(datetime.now(UTC))
    except (KeyError, TypeError, ValueError):
        return True


def _record_collection(chunks: Storage, own: str, record: _Record) -> bool:
    """Record this collection in ``chunks`` as ``own`` (create-only), then make sure it is
    the only live one: otherwise withdraw and return False. Dead records are deleted."""
    if not chunks.create_small(own, record.to_json()):
        return False
    for name, other in _records(chunks).items():
        if name == own:
            continue
        if other.is_dead(datetime.now(UTC)):
            chunks.delete(name)  # its owner is gone: it collects nothing any more
            continue
        chunks.delete(own)
        return False
    return True


def describe(results: list[Collection]) -> list[dict[str, Any]]:
    """The collections as JSON-ready data (for events)."""
    return [
        {
            "store": r.store,
            "deleted": len(r.deleted),
            "deleted_bytes": r.deleted_bytes,
            "kept": r.kept,
            "stored_bytes": r.stored_bytes,
            "skipped": r.skipped,
        }
        for r in results
    ]
