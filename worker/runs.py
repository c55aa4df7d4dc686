"""One record per scheduled run (database, schedule slot) in Redis, changed only by
compare-and-set, so that every worker, beat and catch-up check agrees on what a slot needs.
docs/scheduled-runs.md draws the state machine.

States: ``running`` (an attempt holds the database's lock), ``waiting`` (an attempt failed
and a retry is due at ``retry_at``), and the terminal ``succeeded``, ``failed`` and
``skipped`` (a newer slot superseded it). ``attempt`` counts the attempts of the slot, across
workers and chains, against BACKUP_RETRIES.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import redis

PREFIX = "bakup"
RUNNING = "running"
WAITING = "waiting"
SUCCEEDED = "succeeded"
FAILED = "failed"
SKIPPED = "skipped"
TERMINAL = (SUCCEEDED, FAILED, SKIPPED)
NONE = ""  # no record yet

# KEYS[1]: the record; ARGV[1]: the states it may be in ("" for none), comma-separated;
# ARGV[2]: its time to live; ARGV[3..]: field, value pairs to set. Returns {changed, state}.
_COMPARE_AND_SET = """
local current = redis.call('HGET', KEYS[1], 'state') or ''
local allowed = false
for state in string.gmatch(ARGV[1] .. ',', '([^,]*),') do
  if state == current then allowed = true end
end
if not allowed then return {0, current} end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return {1, current}
"""


def run_key(target: str, slot: int) -> str:
    """The Redis key of ``target``'s run for ``slot``."""
    return f"{PREFIX}:run:{target}:{slot}"


@dataclass(frozen=True)
class Run:
    """A scheduled run as recorded."""

    state: str
    attempt: int
    retry_at: float | None
    owner: str
    error: str

    @classmethod
    def from_hash(cls, data: dict[bytes, bytes]) -> Run:
        """Read a record from Redis's HGETALL reply."""
        text = {key.decode(): value.decode() for key, value in data.items()}
        retry_at = text.get("retry_at")
        return cls(
            state=text.get("state", NONE),
            attempt=int(text.get("attempt") or 0),
            retry_at=float(retry_at) if retry_at else None,
            owner=text.get("owner", ""),
            error=text.get("error", ""),
        )


def owner() -> str:
    """Who is changing a record: this host and process, for operators reading Redis."""
    return f"{socket.gethostname()}:{os.getpid()}"


def read(client: redis.Redis, target: str, slot: int) -> Run | None:
    """Return the record of ``target``'s run for ``slot``, None if there is none."""
    data: Any = client.hgetall(run_key(target, slot))
    return Run.from_hash(data) if data else None


def change(
    client: redis.Redis,
    target: str,
    slot: int,
    *,
    allowed: Collection[str],
    ttl: int,
    **fields: str | int | float,
) -> tuple[bool, str]:
    """Set ``fields`` on the record if its state is one of ``allowed`` (``NONE``: no record).

    Returns whether it changed, and the state found. Raises redis.RedisError.
    """
    values: list[str] = []
    for name, value in {**fields, "owner": owner(), "updated": time.time()}.items():
        values += [name, str(value)]
    script: Any = client.register_script(_COMPARE_AND_SET)
    changed, found = script(keys=[run_key(target, slot)], args=[",".join(allowed), ttl, *values])
    return bool(changed), found.decode() if isinstance(found, bytes) else str(found)
