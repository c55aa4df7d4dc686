"""Coordination in Redis between workers and beats: one backup per database at a time, and one
run per schedule slot.

- The per-database lock has a short time-to-live that a heartbeat thread keeps extending while
  the backup runs, so the lock of a worker that died frees itself within seconds.
- Each schedule slot (a fire time of the database's schedule) has a state key: ``running``,
  ``succeeded`` or ``failed``. A second message for a slot that already ran (two beats started
  by mistake, a redelivery) is skipped; a slot left ``running`` by a dead worker is retaken.
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
SLOT_STATES = ("running", "succeeded", "failed")


def lock_key(target: str) -> str:
    return f"{PREFIX}:lock:{target}"


def slot_key(target: str, slot: int) -> str:
    return f"{PREFIX}:slot:{target}:{slot}"


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


def slot_state(client: redis.Redis, target: str, slot: int) -> str | None:
    """Return the state of ``target``'s run for ``slot`` (None when it never started)."""
    value = client.get(slot_key(target, slot))
    return value.decode() if isinstance(value, bytes) else value


def set_slot_state(client: redis.Redis, target: str, slot: int, state: str, ttl: int) -> None:
    """Record the state of ``target``'s run for ``slot``, kept for ``ttl`` seconds."""
    client.set(slot_key(target, slot), state, ex=ttl)
