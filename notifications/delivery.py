"""Delivering with retries, for a one-shot CLI run: a few attempts with backoff (honouring a
429's Retry-After), bounded in time; permanent failures are not retried. Every outcome is logged
and emitted as an event, so metrics count it. Never raises."""

from __future__ import annotations

import logging
import time

from bakup import events
from notifications.channels.base import DeliveryError, Notification
from notifications.config import NotifySettings

log = logging.getLogger("bakup")

ATTEMPTS = 3
MAX_WAIT_SECONDS = 20.0


def deliver_now(
    notify: NotifySettings, channel_name: str, payload: Notification | tuple[str, str]
) -> bool:
    """Deliver ``payload`` over ``channel_name``; returns whether it arrived."""
    database = payload.database if isinstance(payload, Notification) else ""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            send_once(notify, channel_name, payload)
        except DeliveryError as error:
            last_try = error.permanent or attempt == ATTEMPTS
            log.warning(
                "WARNING: %s notification failed%s: %s",
                channel_name,
                "" if last_try else ", retrying",
                error,
            )
            if last_try:
                record(channel_name, database, "failure", str(error))
                return False
            time.sleep(min(error.retry_after or 2.0 * attempt, MAX_WAIT_SECONDS))
        else:
            record(channel_name, database, "success")
            return True
    return False


def send_once(
    notify: NotifySettings, channel_name: str, payload: Notification | tuple[str, str]
) -> None:
    """One attempt; raises DeliveryError."""
    if channel_name == "healthcheck":
        assert notify.healthcheck is not None and isinstance(payload, tuple)
        notify.healthcheck.ping(*payload)
    else:
        assert isinstance(payload, Notification)
        notify.channel(channel_name).send(payload)


def record(channel: str, database: str, outcome: str, error: str = "") -> None:
    """Emit the delivery's outcome for metrics and logs."""
    events.emit(
        events.Event(
            events.NOTIFICATION_SENT if outcome == "success" else events.NOTIFICATION_FAILED,
            database,
            error=error or None,
            details={"channel": channel},
        )
    )
