"""Setting notifications up for a process: which incident store, which delivery."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from typing import Any

from bakup import events
from bakup.errors import ConfigError
from bakup.settings import Settings
from notifications.channels.base import Notification
from notifications.config import Channel, NotifySettings
from notifications.delivery import deliver_now
from notifications.dispatch import Deliver, Dispatcher
from notifications.incidents import IncidentStore, file_store, memory_store, redis_store


def incident_store(settings: Settings) -> IncidentStore:
    """Redis when REDIS_URL is set (shared by every worker), else a file beside the backups."""
    if settings.redis_url:
        import redis

        return redis_store(redis.Redis.from_url(settings.redis_url, socket_timeout=10))
    return file_store(settings.backup_dir)


def subscribe_for_cli(settings: Settings, *, lenient: bool = False) -> Callable[[], None]:
    """In a one-shot run: notify synchronously (bounded retries) after each event.

    Given the settings and whether to use whichever channels are configured validly even
    when others are not (to report that the configuration is broken; see
    notify_settings_leniently); returns a function that unsubscribes. Raises ConfigError for
    invalid notification settings unless ``lenient``.
    """
    notify = notify_settings_leniently() if lenient else NotifySettings.from_env()
    if not notify.enabled:
        return lambda: None
    store = incident_store(settings)
    if lenient and not settings.redis_url and not settings.backup_dir.is_dir():
        store = memory_store()  # BACKUP_DIR may be what is broken: alert without state
    return events.subscribe(
        Dispatcher(settings, notify, store, lambda c, p: deliver_now(notify, c, p))
    )


# The variables of each channel, read apart when others are invalid (see below).
_CHANNEL_VARIABLES = (
    ("SMTP_URL", "ALERT_EMAIL_FROM", "ALERT_EMAIL_TO"),
    ("SLACK_WEBHOOK_URL",),
    ("WEBHOOK_URL", "WEBHOOK_SECRET"),
    ("HEALTHCHECK_URL",),
)


def notify_settings_leniently(env: Mapping[str, str] | None = None) -> NotifySettings:
    """The notification settings of ``env`` (``os.environ`` by default), keeping every channel
    that is configured validly when others are not: a broken webhook variable must not also
    silence the health check that would report the breakage. Raises nothing."""
    env = os.environ if env is None else env
    try:
        return NotifySettings.from_env(env)
    except ConfigError:
        pass
    channels: list[Channel] = []
    healthcheck = None
    for names in _CHANNEL_VARIABLES:
        subset = {key: value for key, value in env.items() if key.removesuffix("_FILE") in names}
        if not subset:
            continue
        try:
            part = NotifySettings.from_env(subset)
        except ConfigError:
            continue
        channels.extend(part.channels)
        healthcheck = healthcheck or part.healthcheck
    return NotifySettings(channels=tuple(channels), healthcheck=healthcheck)


def subscribe_with(settings: Settings, notify: NotifySettings, deliver: Deliver) -> None:
    """In the worker: hand deliveries to ``deliver`` (a task queue)."""
    if notify.enabled:
        events.subscribe(Dispatcher(settings, notify, incident_store(settings), deliver))


def to_message(payload: Notification | tuple[str, str]) -> dict[str, Any]:
    """A JSON-safe form of a delivery, for a task message."""
    if isinstance(payload, tuple):
        return {"ping": list(payload)}
    return {
        "kind": payload.kind,
        "database": payload.database,
        "subject": payload.subject,
        "text": payload.text,
        "html": payload.html,
        "fields": payload.fields,
        "images": {cid: base64.b64encode(png).decode() for cid, png in payload.images.items()},
    }


def from_message(message: dict[str, Any]) -> Notification | tuple[str, str]:
    """The inverse of to_message."""
    if "ping" in message:
        state, body = message["ping"]
        return (state, body)
    images = {cid: base64.b64decode(data) for cid, data in message.pop("images", {}).items()}
    return Notification(images=images, **message)
