"""One run at a time per database on this machine: backups and prunes of one destination
exclude each other, whether the CLI (cron) or the worker runs them.

The lock is an ``flock`` on ``.bakup-lock`` inside a local backup directory (so it also holds
between containers that share the volume), or on a file under the temporary directory for an
object store. The kernel releases it when its holder dies, so it never needs cleaning. Workers
on several machines also take the Redis lock (``worker.locks``); correctness never depends on
either lock alone: claims and records (``bakup.lifecycle``) keep runs from touching each
other's backups.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bakup.errors import StorageError
from bakup.storage import is_object_store
from bakup.storage.local import describe_os_error

log = logging.getLogger("bakup")

LOCK_NAME = ".bakup-lock"


def lock_path(location: str | Path) -> Path:
    """Return the lock file for one destination (a folder or an object-store URL)."""
    text = str(location)
    if is_object_store(text):
        # The same bucket path on another S3-compatible service is another destination.
        endpoint = os.environ.get("S3_ENDPOINT_URL", "") if text.startswith("s3://") else ""
        digest = hashlib.sha256(f"{endpoint} {text}".encode()).hexdigest()[:24]
        return Path(tempfile.gettempdir()) / "bakup-locks" / f"{digest}.lock"
    return Path(text.removeprefix("file://")) / LOCK_NAME


@contextlib.contextmanager
def exclusive(location: str | Path | tuple[str, ...], label: str) -> Iterator[None]:
    """Hold the run lock of every destination in ``location`` while the block runs, waiting
    (and saying so) while another run holds one.

    Raises StorageError when a lock file cannot be created (the folder is not writable, or
    BACKUP_DIR is a file).
    """
    members = location if isinstance(location, tuple) else (location,)
    with contextlib.ExitStack() as stack:
        for member in sorted(str(m) for m in members):  # one order: no deadlock between runs
            stack.enter_context(_locked(lock_path(member), label))
        yield


@contextlib.contextmanager
def _locked(path: Path, label: str) -> Iterator[None]:
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as error:
        raise StorageError(describe_os_error(error, path.parent), stage="store") from None
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("Waiting for another bakup run on %s to finish...", label)
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock
