"""A durable outbox for alerts: an alert is written to Redis before its delivery task is
queued, and removed once it is delivered (or failed for good). The catch-up check queues again
any alert whose delivery has not finished within ALERT_REDELIVERY_SECONDS, so an alert whose
task was held by a worker that died (a retry waiting for its time, a delivery in progress) is
delivered again within ALERT_REDELIVERY_SECONDS + CATCH_UP_INTERVAL, not after the broker's
visibility timeout (hours: it must outlast the longest backup). Delivery is at least once.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import redis

ENTRIES = "bakup:outbox"  # id -> the delivery's channel and message
DUE = "bakup:outbox:due"  # id -> when to queue it again unless it is done by then


def post(client: redis.Redis, channel: str, message: dict[str, Any], redelivery: float) -> str:
    """Record an alert to deliver over ``channel``; returns its id. Raises redis.RedisError."""
    entry = str(uuid.uuid4())
    with client.pipeline() as pipe:
        pipe.hset(ENTRIES, entry, json.dumps({"channel": channel, "message": message}))
        pipe.zadd(DUE, {entry: time.time() + redelivery})
        pipe.execute()
    return entry


def hold(client: redis.Redis, entry: str, seconds: float) -> bool:
    """Push the entry's redelivery ``seconds`` ahead while a task delivers it (or waits to
    retry). Returns False when the entry is gone: another delivery already finished it."""
    if not client.hexists(ENTRIES, entry):
        return False
    client.zadd(DUE, {entry: time.time() + seconds}, xx=True)
    return True


def done(client: redis.Redis, entry: str) -> None:
    """The alert was delivered or failed for good: forget it."""
    with client.pipeline() as pipe:
        pipe.hdel(ENTRIES, entry)
        pipe.zrem(DUE, entry)
        pipe.execute()


def overdue(client: redis.Redis, redelivery: float) -> list[tuple[str, str, dict[str, Any]]]:
    """Claim the entries whose delivery is overdue (their redelivery pushed ahead, so two
    checks never both take one) and return them as (id, channel, message)."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    raw_ids: Any = client.zrangebyscore(DUE, "-inf", time.time())
    for raw in raw_ids:
        entry = raw.decode() if isinstance(raw, bytes) else str(raw)
        # Claimed by whoever moves its due time first: a compare on the old score.
        with client.pipeline() as pipe:
            try:
                pipe.watch(DUE)
                score = pipe.zscore(DUE, entry)
                if score is None or score > time.time():
                    pipe.unwatch()
                    continue
                pipe.multi()
                pipe.zadd(DUE, {entry: time.time() + redelivery})
                pipe.hget(ENTRIES, entry)
                _, payload = pipe.execute()
            except redis.WatchError:
                continue
        if payload is None:
            client.zrem(DUE, entry)
            continue
        data = json.loads(payload)
        found.append((entry, data["channel"], data["message"]))
    return found
