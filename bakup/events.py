"""Events that actions emit, and the listeners that receive them.

The engine knows nothing of metrics or notifications: it emits events (backup started,
succeeded, failed; prune and restore results) and whoever subscribed (the Prometheus exporter,
the alert dispatcher) reacts. A listener that raises is logged and skipped, so a metrics or
notification failure never turns a good backup into a failed one, nor hides a failed one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

BACKUP_STARTED = "backup.started"
BACKUP_SUCCEEDED = "backup.succeeded"
BACKUP_FAILED = "backup.failed"  # the outcome: nobody retries it
BACKUP_ATTEMPT_FAILED = "backup.attempt_failed"  # a retry follows
# A backup that stands without its roles and globals (pg_dumpall missing or refused): a warning.
BACKUP_GLOBALS_MISSING = "backup.globals_missing"
PRUNE_FINISHED = "prune.finished"
PRUNE_FAILED = "prune.failed"
VERIFY_SUCCEEDED = "verify.succeeded"
VERIFY_FAILED = "verify.failed"
# A restore-level verification that could only check less (no CREATEDB, no key): a warning.
VERIFY_DEGRADED = "verify.degraded"
NOTIFICATION_SENT = "notification.sent"
NOTIFICATION_FAILED = "notification.failed"
RESTORE_SUCCEEDED = "restore.succeeded"
RESTORE_FAILED = "restore.failed"
MANIFEST_UNREADABLE = "manifest.unreadable"


@dataclass(frozen=True)
class Event:
    """Something that happened to one database's backups.

    ``stage`` and ``error`` are set for failures; ``error`` is the one-line message, already
    free of secrets. ``details`` carries figures (sizes, durations, deleted names).
    """

    kind: str
    database: str
    at: datetime = field(default_factory=lambda: datetime.now(UTC))
    stage: str | None = None
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


Listener = Callable[[Event], None]
_listeners: list[Listener] = []


def subscribe(listener: Listener) -> Callable[[], None]:
    """Register ``listener`` for every event; returns a function that unregisters it."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener) if listener in _listeners else None


def emit(event: Event) -> None:
    """Hand ``event`` to every listener; a listener's exception is logged, never raised."""
    for listener in list(_listeners):
        try:
            listener(event)
        except Exception:  # a listener must never break the action that emitted
            log.exception("event listener %r failed on %s", listener, event.kind)
