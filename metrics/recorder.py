"""Keeps the metrics current: listens to bakup's events, and at start-up fills every series
from the stored manifests so that values survive a restart instead of starting at zero."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from bakup import __version__, events
from bakup.catalog import Backup, list_backups, newest_restore_test
from bakup.dedup.usage import measure_usage, one_destination
from bakup.errors import BakupError
from bakup.schedule import Schedule
from bakup.settings import Settings
from bakup.storage import open_storage
from bakup.targets import Target
from metrics.definitions import STAGES, Metrics

log = logging.getLogger("bakup")


class Recorder:
    """An event listener that updates ``metrics``; subscribe it with ``bakup.events``."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._schedules: dict[str, Schedule] = {}

    def __call__(self, event: events.Event) -> None:
        handler = getattr(self, "_on_" + event.kind.replace(".", "_"), None)
        if handler is not None:
            handler(event)

    # -- start-up ---------------------------------------------------------------------

    def initialize(self, settings: Settings, channels: tuple[str, ...] = ()) -> None:
        """Create every series for every configured database and notification channel
        (counters at 0, so rate() and absent() behave), without reading storage: the worker's
        main process calls this before it forks its pool, and a storage client (obstore's
        runtime threads) must never exist in a process that forks. Never raises."""
        self.metrics.build_info.labels(__version__).set(1)
        for channel in channels:
            for outcome in ("success", "failure"):
                self.metrics.notifications.labels(channel, outcome).inc(0)
        now = datetime.now(UTC)
        for target in settings.targets:
            self._schedules[target.name] = target.schedule
            self._zero_series(target.name)
            period = target.schedule.period(now).total_seconds() if target.schedule.enabled else 0
            self.metrics.schedule_period.labels(target.name).set(period)

    def restore_stored(self, settings: Settings) -> None:
        """Set the gauges from what is stored (last success, sizes, verification) so values
        survive a restart instead of starting at zero. Never raises."""
        for target in settings.targets:
            try:
                backups = list_backups(
                    open_storage(target.location),
                    target.database.dbname if target.database else "",
                    target.name,
                )
            except BakupError as error:
                log.warning("WARNING: metrics for %s start empty: %s", target.name, error.message)
                continue
            self.restore_from(target, backups)
            self._restore_usage(target, backups)

    def _restore_usage(self, target: Target, backups: list[Backup]) -> None:
        """Set the storage-use gauges of ``target`` from its kept ``backups`` and its chunk
        store (listed only when it has deduplicated backups). Never raises."""
        try:
            usage = measure_usage(one_destination(open_storage(target.location)), backups)
        except BakupError as error:
            log.warning(
                "WARNING: storage use of %s unknown until its next prune: %s",
                target.name,
                error.message,
            )
            return
        self.metrics.backup_stored_bytes.labels(target.name).set(usage.stored_bytes)
        self.metrics.dedup_ratio.labels(target.name).set(usage.dedup_ratio)

    def _zero_series(self, database: str) -> None:
        m = self.metrics
        for outcome in ("success", "failure"):
            m.backups.labels(database, outcome).inc(0)
        for stage in STAGES:
            m.backup_failures.labels(database, stage).inc(0)
            m.backup_attempt_failures.labels(database, stage).inc(0)
        m.verify_failures.labels(database).inc(0)
        m.verify_degraded.labels(database).set(0)
        m.manifest_unreadable.labels(database).inc(0)
        m.prune_deleted.labels(database).inc(0)
        m.backup_in_progress.labels(database).set(0)
        for gauge in (
            m.backup_last_success,
            m.backup_last_failure,
            m.backup_last_attempt,
            m.verify_last_success,
            m.verify_last_failure,
            m.backup_next_due,
        ):
            gauge.labels(database).set(0)
        m.backup_duration.labels(database)
        m.verify_duration.labels(database)

    def restore_from(self, target: Target, backups: list[Backup]) -> None:
        """Set the gauges of ``target`` from its complete backups (oldest first)."""
        m = self.metrics
        database = target.name
        self._set_stored(database, backups)
        if not backups:
            return
        newest = backups[-1]
        finished = (newest.finished_at or newest.created_at).timestamp()
        m.backup_last_success.labels(database).set(finished)
        m.backup_last_attempt.labels(database).set(finished)
        m.backup_size.labels(database).set(newest.size_bytes)
        m.backup_raw_size.labels(database).set(newest.raw_size_bytes)
        m.backup_last_duration.labels(database).set(newest.duration_seconds)
        self._set_next_due(database, newest.created_at)
        passed = [b.verified_at for b in backups if b.verified and b.verified_at]
        failed = [b.verified_at for b in backups if b.verified is False and b.verified_at]
        if passed:
            m.verify_last_success.labels(database).set(max(passed).timestamp())
        if failed:
            m.verify_last_failure.labels(database).set(max(failed).timestamp())
        last = max(
            (b for b in backups if b.verified and b.verified_at and b.verification),
            key=lambda b: b.verified_at or newest.created_at,
            default=None,
        )
        if last is not None and last.verification is not None:
            asked, got = last.verification.get("requested"), last.verification.get("level")
            m.verify_degraded.labels(database).set(int(asked == "restore" and got != "restore"))
        restored = _last_restore_duration(backups)
        if restored is not None:
            m.restore_test_duration.labels(database).set(restored)

    def _set_stored(self, database: str, backups: list[Backup]) -> None:
        m = self.metrics
        m.stored_backups.labels(database).set(len(backups))
        m.stored_bytes.labels(database).set(sum(backup.size_bytes for backup in backups))
        oldest = min((backup.created_at for backup in backups), default=None)
        m.oldest_backup.labels(database).set(oldest.timestamp() if oldest else 0)

    # -- events -----------------------------------------------------------------------

    def _on_backup_started(self, event: events.Event) -> None:
        self.metrics.backup_last_attempt.labels(event.database).set(event.at.timestamp())
        self.metrics.backup_in_progress.labels(event.database).set(1)

    def _on_backup_succeeded(self, event: events.Event) -> None:
        m, database, details = self.metrics, event.database, event.details
        m.backup_in_progress.labels(database).set(0)
        m.backups.labels(database, "success").inc()
        m.backup_duration.labels(database).observe(details["duration_seconds"])
        m.backup_last_duration.labels(database).set(details["duration_seconds"])
        m.backup_size.labels(database).set(details["size_bytes"])
        m.backup_raw_size.labels(database).set(details["raw_size_bytes"])
        m.backup_last_success.labels(database).set(event.at.timestamp())
        self._set_next_due(database, details.get("created_at") or event.at)

    def _set_next_due(self, database: str, covered: datetime) -> None:
        """The next backup is due at the schedule's first fire time after the one ``covered``
        (a backup's start): computed at every success, so weekends and irregular cron lines
        get their own deadline instead of one frozen period."""
        schedule = self._schedules.get(database)
        if schedule is None or not schedule.enabled:
            return
        due = schedule.next_fire(covered).timestamp()
        self.metrics.backup_next_due.labels(database).set(due)

    def _on_backup_failed(self, event: events.Event) -> None:
        m, database = self.metrics, event.database
        m.backup_in_progress.labels(database).set(0)
        m.backups.labels(database, "failure").inc()
        stage = event.stage if event.stage in STAGES else "internal"
        m.backup_failures.labels(database, stage).inc()
        m.backup_last_failure.labels(database).set(event.at.timestamp())

    def _on_backup_attempt_failed(self, event: events.Event) -> None:
        m, database = self.metrics, event.database
        m.backup_in_progress.labels(database).set(0)
        stage = event.stage if event.stage in STAGES else "internal"
        m.backup_attempt_failures.labels(database, stage).inc()

    def _on_verify_succeeded(self, event: events.Event) -> None:
        m = self.metrics
        m.verify_duration.labels(event.database).observe(event.details.get("duration_seconds", 0))
        restored = event.details.get("restore_duration_seconds")
        if restored is not None:
            m.restore_test_duration.labels(event.database).set(restored)
        m.verify_last_success.labels(event.database).set(event.at.timestamp())
        if event.details.get("requested") != "restore" or event.details.get("level") == "restore":
            m.verify_degraded.labels(event.database).set(0)

    def _on_verify_failed(self, event: events.Event) -> None:
        m = self.metrics
        m.verify_failures.labels(event.database).inc()
        m.verify_last_failure.labels(event.database).set(event.at.timestamp())
        if "duration_seconds" in event.details:
            m.verify_duration.labels(event.database).observe(event.details["duration_seconds"])

    def _on_verify_degraded(self, event: events.Event) -> None:
        self.metrics.verify_degraded.labels(event.database).set(1)

    def _on_manifest_unreadable(self, event: events.Event) -> None:
        self.metrics.manifest_unreadable.labels(event.database).inc()

    def _on_notification_sent(self, event: events.Event) -> None:
        self.metrics.notifications.labels(event.details["channel"], "success").inc()

    def _on_notification_failed(self, event: events.Event) -> None:
        self.metrics.notifications.labels(event.details["channel"], "failure").inc()

    def _on_prune_finished(self, event: events.Event) -> None:
        m, database, details = self.metrics, event.database, event.details
        m.prune_deleted.labels(database).inc(len(details.get("deleted", [])))
        m.stored_backups.labels(database).set(details["stored_backups"])
        m.stored_bytes.labels(database).set(details["stored_bytes"])
        oldest = details.get("oldest_created_at")
        m.oldest_backup.labels(database).set(oldest.timestamp() if oldest else 0)
        if "backup_stored_bytes" in details:  # absent when the chunk store could not be listed
            m.backup_stored_bytes.labels(database).set(details["backup_stored_bytes"])
            m.dedup_ratio.labels(database).set(details["dedup_ratio"])


def _last_restore_duration(backups: list[Backup]) -> float | None:
    """The duration of the most recent successful test restore among ``backups``, or None
    when none was restore-tested."""
    found = newest_restore_test(backups)
    return found[1] if found else None
