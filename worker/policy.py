"""The worker's timing decisions, kept apart from Celery so they can be tested alone."""

from __future__ import annotations

import random
from datetime import UTC, datetime

from bakup.catalog import Backup
from bakup.settings import Settings
from bakup.targets import Target


def retry_delay(settings: Settings, retries: int) -> float:
    """Seconds before retry number ``retries + 1``: exponential from RETRY_BASE_SECONDS, capped
    at RETRY_MAX_SECONDS, with jitter over its upper half so workers retrying together spread
    out."""
    ceiling: float = min(settings.retry_max_seconds, settings.retry_base_seconds * 2**retries)
    return ceiling * random.uniform(0.5, 1.0)


def slot_ttl(target: Target) -> int:
    """Seconds to remember the state of a schedule slot: well past the next slot."""
    return int(2 * target.schedule.period(datetime.now(UTC)).total_seconds()) + 86400


def verify_level_for(settings: Settings, backups: list[Backup], now: datetime) -> str:
    """The level to verify a new backup at: VERIFY_LEVEL, except that with VERIFY_FREQUENCY
    a test restore happens at most that often (per the stored backups' recorded
    verifications), with an integrity check in between."""
    if settings.verify_level != "restore" or not settings.verify_frequency:
        return settings.verify_level
    tested = [
        backup.verified_at
        for backup in backups
        if backup.verified
        and backup.verified_at is not None
        and (backup.verification or {}).get("level") == "restore"
    ]
    if tested and (now - max(tested)).total_seconds() < settings.verify_frequency:
        return "integrity"
    return "restore"
