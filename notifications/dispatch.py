"""From bakup's events to notifications: which to send, rendered, handed to a delivery function.

Failures of backup, verification and prune alert (once per incident, then reminders); the
first success after them sends a recovery notice; NOTIFY_ON_SUCCESS adds success notices; the
dead man's switch is pinged at start, success and failure. Delivery is someone else's job
(a Celery task in the worker, a bounded retry loop in the CLI): this listener only decides and
renders, so it never delays a backup.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from bakup import events
from bakup.catalog import list_backups
from bakup.errors import BakupError, ConfigError
from bakup.journal import read_runs
from bakup.logs import megabytes
from bakup.settings import Settings
from bakup.storage import open_storage
from notifications.advice import advice_for
from notifications.channels.base import Notification
from notifications.config import NotifySettings
from notifications.incidents import Decision, IncidentStore
from notifications.render import Renderer

log = logging.getLogger("bakup")

# A notification for every configured channel, or a ping: (channel name, payload). Whatever
# the function returns (whether it arrived, a queued task) is not used.
Deliver = Callable[[str, Notification | tuple[str, str]], object]

FAILURES = {
    events.BACKUP_FAILED: "backup",
    events.VERIFY_FAILED: "verification",
    events.PRUNE_FAILED: "prune",
    events.VERIFY_DEGRADED: "restore test",
}
SUCCESSES = {
    events.BACKUP_SUCCEEDED: "backup",
    events.VERIFY_SUCCEEDED: "verification",
    events.PRUNE_FINISHED: "prune",
}


class Dispatcher:
    """The event listener; subscribe it with ``bakup.events.subscribe``."""

    def __init__(
        self,
        settings: Settings,
        notify: NotifySettings,
        incidents: IncidentStore,
        deliver: Deliver,
        renderer: Renderer | None = None,
    ) -> None:
        self.settings = settings
        self.notify = notify
        self.incidents = incidents
        self.deliver = deliver
        self.renderer = renderer or Renderer(notify.template_dir)

    def __call__(self, event: events.Event) -> None:
        if event.kind == events.BACKUP_STARTED:
            self._ping("start", "")
        elif event.kind in FAILURES:
            self._failed(event, FAILURES[event.kind])
        elif event.kind in SUCCESSES:
            self._succeeded(event, SUCCESSES[event.kind])
            if event.kind == events.VERIFY_SUCCEEDED and event.details.get("level") == "restore":
                self._succeeded(event, "restore test")  # test restores work again

    def _ping(self, state: str, body: str) -> None:
        if self.notify.healthcheck is not None:
            self.deliver("healthcheck", (state, body))

    def _failed(self, event: events.Event, activity: str) -> None:
        if activity == "backup":
            self._ping("fail", event.error or "")
        decision = self.incidents.failed(
            event.database,
            activity,
            event.stage or "unknown",
            time.time(),
            self.notify.repeat_hours * 3600,
        )
        if decision.send is None:
            log.info(
                "Not alerting again for %s (%s): the incident is already reported",
                event.database,
                event.stage,
            )
            return
        context = {
            "kind_label": activity,
            "stage": event.stage or "unknown",
            "error": event.error or "",
            "at": _when(event.at),
            "advice": advice_for(event.error or ""),
            "reminder": decision.send == "reminder",
            "incident_started": _when(datetime.fromtimestamp(decision.started or 0, UTC)),
            "repeat_hours": f"{self.notify.repeat_hours:g}",
            **self._newest(event.database),
        }
        self._send(self.renderer.render(decision.send, event.database, context, template="alert"))

    def _succeeded(self, event: events.Event, activity: str) -> None:
        if activity == "backup":
            self._ping("success", "")
        decision = self.incidents.succeeded(event.database, activity)
        if decision.send is None and activity == "backup":
            decision = self._forgotten_incident(event.database)
        details = event.details
        newest = self._newest(event.database)
        if decision.send == "recovery":
            context = {
                "kind_label": activity,
                "at": _when(event.at),
                "incident_started": _when(datetime.fromtimestamp(decision.started or 0, UTC)),
                "size": megabytes(int(details.get("size_bytes", 0)))
                if "size_bytes" in details
                else "",
                **newest,
            }
            self._send(self.renderer.render("recovery", event.database, context))
        elif activity == "backup" and self.notify.notify_on_success:
            context = {
                "at": _when(event.at),
                "size": megabytes(int(details["size_bytes"])),
                "raw_size": megabytes(int(details["raw_size_bytes"])),
                "duration": f"{details['duration_seconds']:.1f} s",
                **newest,
            }
            self._send(self.renderer.render("success", event.database, context))

    def _forgotten_incident(self, database: str) -> Decision:
        """An incident the store no longer knows (Redis restarted empty) rebuilt from the run
        journal beside the backups: if the backups before this success failed for good, a
        recovery notice is due. Returns the decision (nothing to send when they did not)."""
        try:
            target = self.settings.target(database)
            runs = read_runs(open_storage(target.location))
        except (BakupError, ConfigError):
            return Decision(None)
        outcomes = [
            run
            for run in runs
            if run.get("kind") == "backup" and run.get("outcome") in ("success", "failure")
        ]
        failures = list(
            itertools.takewhile(lambda run: run["outcome"] == "failure", reversed(outcomes[:-1]))
        )
        if not outcomes or outcomes[-1]["outcome"] != "success" or not failures:
            return Decision(None)
        log.info("Recovery of %s: its incident was rebuilt from the run journal", database)
        stages = tuple(sorted({str(run.get("stage", "unknown")) for run in failures}))
        return Decision("recovery", failures[-1]["at"].timestamp(), stages)

    def _send(self, notification: Notification) -> None:
        for channel in self.notify.channels:
            self.deliver(channel.name, notification)

    def _newest(self, database: str) -> dict[str, Any]:
        """The newest complete backup and its age, for messages."""
        try:
            target = self.settings.target(database)
            backups = list_backups(open_storage(target.location))
        except BakupError:
            backups = []
        if not backups:
            return {"newest_backup": "", "newest_backup_age": ""}
        newest = backups[-1]
        age = datetime.now(UTC) - newest.created_at
        hours = age.total_seconds() / 3600
        return {
            "newest_backup": newest.name,
            "newest_backup_age": f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours",
        }


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
