"""Leases: how a record (a backup's claim, a chunk collection) stays its owner's while the
owner works, and how the owner learns that it may no longer be.

Another machine cannot see whether a process lives, so it trusts a record's lease: once
``lease_expires_at`` has passed, the record's work may be swept. The owner therefore renews the
lease on a thread for as long as it works and, before a step that is safe only while the record
is its own, asks whether it still holds it: ``Lease.is_held`` before deleting a chunk,
``Lease.conclude`` (which first stops the renewals) before recording a backup complete. A lease
that could not be renewed in time is treated as lost, even if it was renewed later, since
someone may have swept under it in between. Half the lease is kept as a margin for the clocks
of the machines sharing a store.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from bakup.errors import StorageError

log = logging.getLogger("bakup")

DEFAULT_LEASE_SECONDS = 600.0
# Renewals per lease: one a minute by default, so nine may fail before the margin is reached.
RENEWALS_PER_LEASE = 10


def lease_seconds() -> float:
    """The length of a lease: 600 s, or ``BAKUP_LEASE_SECONDS`` (a test hook, so that tests
    can let a lease run out in seconds)."""
    try:
        return max(1.0, float(os.environ.get("BAKUP_LEASE_SECONDS", "")))
    except ValueError:
        return DEFAULT_LEASE_SECONDS


class Lease:
    """One record's lease, renewed by ``write`` (given the new expiry, raises StorageError).

    Given ``expires_at``, the expiry already written with the record, and ``label``, what the
    record is (for messages).
    """

    def __init__(self, label: str, expires_at: datetime, write: Callable[[datetime], None]) -> None:
        self.label = label
        self.seconds = lease_seconds()
        self.margin = timedelta(seconds=self.seconds / 2)
        self._expires_at = expires_at
        self._write = write
        self._lost_at: datetime | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @staticmethod
    def expiry(now: datetime | None = None) -> datetime:
        """The expiry of a lease taken or renewed at ``now`` (default: now)."""
        return (now or datetime.now(UTC)) + timedelta(seconds=lease_seconds())

    def is_held(self, now: datetime | None = None) -> bool:
        """Whether the lease has never come within its margin of running out."""
        now = now or datetime.now(UTC)
        with self._lock:
            if self._lost_at is None and now >= self._expires_at - self.margin:
                self._lost_at = now
            return self._lost_at is None

    def ensure_held(self) -> None:
        """Raise StorageError (transient: the run is retried) when the lease was lost."""
        if not self.is_held():
            raise StorageError(
                f"{self.label} could not be renewed in time (the process was frozen or the "
                "storage unreachable), so another machine may have cleaned up after it: "
                "nothing was kept; check the storage and run again (the worker retries)",
                stage="store",
            )

    def renew(self) -> None:
        """Write a new expiry. A failed write is logged; ``ensure_held`` tells later whether
        the lease survived it."""
        if not self.is_held():
            return  # lost stays lost: a later renewal cannot undo a sweep in between
        expires_at = self.expiry()
        try:
            self._write(expires_at)
        except StorageError as error:
            log.warning("WARNING: could not renew %s: %s", self.label, error)
            return
        with self._lock:
            self._expires_at = expires_at

    def start_renewing(self) -> None:
        """Renew the lease on a thread, a tenth of its length apart, until ``stop_renewing``."""
        self._stop.clear()

        def renew() -> None:
            while not self._stop.wait(self.seconds / RENEWALS_PER_LEASE):
                self.renew()

        self._renewer = threading.Thread(target=renew, name=f"lease-{self.label}", daemon=True)
        self._renewer.start()

    def stop_renewing(self) -> None:
        """Stop the renewals; a renewal being written finishes first."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None

    def conclude(self) -> None:
        """Stop renewing, then raise StorageError if the lease was lost. Call it right before
        the record is replaced by its final state (a backup recorded complete): a renewal
        written after that would turn the record back into a live claim."""
        self.stop_renewing()
        self.ensure_held()


@contextlib.contextmanager
def kept(lease: Lease) -> Iterator[Lease]:
    """Renew ``lease`` on a thread while the block runs (or until ``lease.conclude()``);
    yields it."""
    lease.start_renewing()
    try:
        yield lease
    finally:
        lease.stop_renewing()
