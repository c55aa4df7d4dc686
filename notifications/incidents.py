"""Incidents: repeated failures of the same database, activity and stage are one incident. The
first failure alerts; later ones send a reminder at most every ALERT_REPEAT_HOURS; the first
success ends it with a recovery notice.

State lives in Redis for the worker (shared by every process and machine), or in a small JSON
file beside the backups for a one-shot `bakup backup` run without Redis.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import redis

State = dict[str, dict[str, float]]  # stage -> {"started": ts, "last_sent": ts}


@dataclass(frozen=True)
class Decision:
    """What to send for one failure or success."""

    send: str | None  # "alert", "reminder", "recovery" or None
    started: float | None = None
    stages: tuple[str, ...] = ()


# A change of one key's state: the new state and what to send.
Change = Callable[[State], tuple[State, Decision]]
# Applies a change to the state stored under a key, atomically; returns its decision.
Transact = Callable[[str, Change], Decision]


class IncidentStore:
    """Keeps open incidents per (database, activity) and decides what to send."""

    def __init__(self, transact: Transact) -> None:
        self._transact = transact

    def failed(
        self, database: str, activity: str, stage: str, now: float, repeat_seconds: float
    ) -> Decision:
        """Record a failure; returns alert (new incident), reminder (due) or nothing."""

        def change(state: State) -> tuple[State, Decision]:
            incident = state.get(stage)
            if incident is None:
                state[stage] = {"started": now, "last_sent": now}
                return state, Decision("alert", now, (stage,))
            if now - incident["last_sent"] >= repeat_seconds:
                incident["last_sent"] = now
                return state, Decision("reminder", incident["started"], (stage,))
            return state, Decision(None, incident["started"], (stage,))

        return self._transact(f"{database}:{activity}", change)

    def succeeded(self, database: str, activity: str) -> Decision:
        """Record a success; returns recovery if it ended an incident."""

        def change(state: State) -> tuple[State, Decision]:
            if not state:
                return state, Decision(None)
            started = min(incident["started"] for incident in state.values())
            return {}, Decision("recovery", started, tuple(sorted(state)))

        return self._transact(f"{database}:{activity}", change)


def redis_store(client: redis.Redis) -> IncidentStore:
    """Incidents in Redis, changed atomically (optimistic WATCH/MULTI)."""

    def transact(key: str, change: Change) -> Decision:
        name = f"bakup:incidents:{key}"
        with client.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(name)
                    raw = pipe.get(name)
                    state, result = change(json.loads(raw) if raw else {})
                    pipe.multi()
                    if state:
                        pipe.set(name, json.dumps(state))
                    else:
                        pipe.delete(name)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    return IncidentStore(transact)


def memory_store() -> IncidentStore:
    """Incidents kept only for this process: for a run that has nowhere to keep them (its
    BACKUP_DIR is what is misconfigured), so every such run alerts."""
    everything: dict[str, State] = {}

    def transact(key: str, change: Change) -> Decision:
        state, result = change(everything.get(key, {}))
        if state:
            everything[key] = state
        else:
            everything.pop(key, None)
        return result

    return IncidentStore(transact)


def file_store(directory: Path) -> IncidentStore:
    """Incidents in ``directory/.bakup-incidents.json``, changed under an exclusive lock."""

    def transact(key: str, change: Change) -> Decision:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / ".bakup-incidents.json"
        with _locked(path) as handle:
            handle.seek(0)
            raw = handle.read()
            everything = json.loads(raw) if raw.strip() else {}
            state, result = change(everything.get(key, {}))
            if state:
                everything[key] = state
            else:
                everything.pop(key, None)
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps(everything))
            handle.flush()
            os.fsync(handle.fileno())
            return result

    return IncidentStore(transact)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[TextIO]:
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    with os.fdopen(descriptor, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield handle
