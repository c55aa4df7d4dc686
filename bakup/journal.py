"""The run journal: one JSON line per backup and verification, kept beside the manifests.

Weekly summaries read it: how many backups were taken and failed, how long they took. It lives
with the backups, not in Redis, so it survives a worker restart and a Redis flush; deleted
backups keep their lines (failures never had a manifest anyway).
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

from bakup.errors import BakupError
from bakup.storage.base import Storage

log = logging.getLogger("bakup")

JOURNAL = ".bakup-journal.jsonl"


def record_run(storage: Storage, entry: dict[str, Any]) -> None:
    """Append ``entry`` (with an ``at`` time) to the journal. Logs, never raises: a journal
    problem must not fail the backup it describes."""
    line = {"at": datetime.now(UTC).isoformat(), **entry}
    try:
        storage.append_small(JOURNAL, (json.dumps(line, default=str) + "\n").encode())
    except BakupError as error:
        log.warning("WARNING: could not write the run journal: %s", error.message)


def read_runs(storage: Storage, since: datetime | None = None) -> list[dict[str, Any]]:
    """Return the journal's entries (oldest first), from ``since`` on; unreadable lines are
    skipped. Raises StorageError if the storage cannot be read."""
    try:
        raw = storage.get_small(JOURNAL)
    except FileNotFoundError:
        return []
    runs = []
    for line in raw.decode("utf-8", "replace").splitlines():
        try:
            entry = json.loads(line)
            entry["at"] = datetime.fromisoformat(entry["at"])
        except (ValueError, KeyError, TypeError):
            continue
        if since is None or entry["at"] >= since:
            runs.append(entry)
    return runs
