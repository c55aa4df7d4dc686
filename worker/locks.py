"""The per-database lock in Redis: one backup per database at a time across workers.

The lock has a short time-to-live that a heartbeat thread keeps extending while the backup
runs, so the lock of a worker that died frees itself within seconds. What each schedule slot
needs is recorded separately (``worker.runs``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis.lock import Lock

log = logging.getLogger("bakup")

PREFIX = "bakup"


def lock_key(target: str) -> str:
    return f"{PREFIX}:lock:{target}"


@contextmanager
def database_lock(client: redis.Redis, target: str, ttl: float) -> Iterator[bool]:
    """Try to take the lock of ``target`` without waiting.

    Yields True while it is held (a heartbeat keeps it alive) or False when another worker
    holds it. The lock is released on exit; if this process dies, it expires after ``ttl``.
    """
    lock = Lock(client, lock_key(target), timeout=ttl, thread_local=False)
    if not lock.acquire(blocking=False):
        yield False
        return
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(ttl / 3):
            try:
                lock.extend(ttl, replace_ttl=True)
            except Exception as error:  # a lost lock must not kill the backup in progress
                log.warning("WARNING: could not extend the lock of %s: %s", target, error)

    beat = threading.Thread(target=heartbeat, name=f"lock-{target}", daemon=True)
    beat.start()
    try:
        yield True
    finally:
        stop.set()
        beat.join(timeout=5)
        try:
            lock.release()
        except Exception as error:  # expired meanwhile: nothing left to release
            log.warning("WARNING: the lock of %s had expired before release: %s", target, error)


def is_locked(client: redis.Redis, target: str) -> bool:
    """Whether some worker holds ``target``'s lock now."""
    return bool(client.exists(lock_key(target)))
