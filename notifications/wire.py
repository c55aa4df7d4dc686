"""Setting notifications up for a process: which incident store, which delivery."""

from __future__ import annotations

import base64
from typing import Any

from bakup import events
from bakup.settings import Settings
from notifications.channels.base import Notification
from notifications.config import NotifySettings
from notifications.delivery import deliver_now
from notifications.dispatch import Deliver, Dispatcher
from notifications.incidents import IncidentStore, file_store, redis_store


def incident_store(settings: Settings) -> IncidentStore:
    """Redis when REDIS_URL is set (shared by every worker), else a file beside the backups."""
    if settings.redis_url:
        import redis

        return redis_store(redis.Redis.from_url(settings.redis_url, socket_timeout=10))
    return file_store(settings.backup_dir)


def subscribe_for_cli(settings: Settings) -> None:
    """In a one-shot run: notify synchronously (bounded retries) after each event."""
    notify = NotifySettings.from_env()
    if not notify.enabled:
        return
    events.subscribe(
        Dispatcher(
            settings, notify, incident_store(settings), lambda c, p: deliver_now(notify, c, p)
        )
    )


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
