"""The metrics: names, types and help texts. A contract: dashboards and alert rules use them.

Every series is labelled by ``database`` (the configured name), plus a small fixed ``stage`` or
``outcome`` where the name says so. Gauges say how they combine across the worker's processes
(prometheus-client's multiprocess mode): timestamps take the maximum, "last" values the most
recent write, in-progress flags the sum over live processes.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from bakup import __version__

DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)
STAGES = ("config", "connect", "dump", "store", "manifest", "interrupted", "internal")


@dataclass(frozen=True)
class Metrics:
    """Every metric bakup exports, registered in one registry."""

    backup_duration: Histogram
    backup_last_duration: Gauge
    backup_size: Gauge
    backup_raw_size: Gauge
    backup_last_success: Gauge
    backup_last_failure: Gauge
    backup_last_attempt: Gauge
    backup_in_progress: Gauge
    backups: Counter
    backup_failures: Counter
    backup_attempt_failures: Counter
    oldest_backup: Gauge
    verify_duration: Histogram
    verify_last_success: Gauge
    verify_last_failure: Gauge
    verify_failures: Counter
    verify_degraded: Gauge
    restore_test_duration: Gauge
    manifest_unreadable: Counter
    prune_deleted: Counter
    stored_backups: Gauge
    stored_bytes: Gauge
    backup_stored_bytes: Gauge
    dedup_ratio: Gauge
    schedule_period: Gauge
    backup_next_due: Gauge
    notifications: Counter
    build_info: Gauge


def create_metrics(registry: CollectorRegistry | None = None) -> Metrics:
    """Create the metrics in ``registry`` (None: the default one, as multiprocess mode needs)."""
    target = REGISTRY if registry is None else registry
    db = ("database",)
    return Metrics(
        backup_duration=Histogram(
            "bakup_backup_duration_seconds",
            "Duration of successful backups.",
            db,
            buckets=DURATION_BUCKETS,
            registry=target,
        ),
        backup_last_duration=Gauge(
            "bakup_backup_last_duration_seconds",
            "Duration of the last successful backup.",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        backup_size=Gauge(
            "bakup_backup_size_bytes",
            "Stored (compressed) size of the last successful backup.",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        backup_raw_size=Gauge(
            "bakup_backup_raw_size_bytes",
            "Uncompressed size of the last successful backup.",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        backup_last_success=Gauge(
            "bakup_backup_last_success_timestamp_seconds",
            "When the last successful backup finished (0: never).",
            db,
            multiprocess_mode="max",
            registry=target,
        ),
        backup_last_failure=Gauge(
            "bakup_backup_last_failure_timestamp_seconds",
            "When the last backup failed (0: never).",
            db,
            multiprocess_mode="max",
            registry=target,
        ),
        backup_last_attempt=Gauge(
            "bakup_backup_last_attempt_timestamp_seconds",
            "When the last backup started, successful or not (0: never).",
            db,
            multiprocess_mode="max",
            registry=target,
        ),
        backup_in_progress=Gauge(
            "bakup_backup_in_progress",
            "1 while a backup of the database runs.",
            db,
            multiprocess_mode="livesum",
            registry=target,
        ),
        backups=Counter(
            "bakup_backups",
            "Backups run, by outcome.",
            (*db, "outcome"),
            registry=target,
        ),
        backup_failures=Counter(
            "bakup_backup_failures",
            "Failed backups, by the stage that failed.",
            (*db, "stage"),
            registry=target,
        ),
        backup_attempt_failures=Counter(
            "bakup_backup_attempt_failures",
            "Failed backup attempts that were retried, by the stage that failed (a backup "
            "that fails for good counts in bakup_backup_failures_total instead).",
            (*db, "stage"),
            registry=target,
        ),
        oldest_backup=Gauge(
            "bakup_oldest_backup_timestamp_seconds",
            "When the oldest kept backup was taken (0: none kept).",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        verify_duration=Histogram(
            "bakup_verify_duration_seconds",
            "Duration of verifications.",
            db,
            buckets=DURATION_BUCKETS,
            registry=target,
        ),
        verify_last_success=Gauge(
            "bakup_verify_last_success_timestamp_seconds",
            "When a backup last passed verification (0: never).",
            db,
            multiprocess_mode="max",
            registry=target,
        ),
        verify_last_failure=Gauge(
            "bakup_verify_last_failure_timestamp_seconds",
            "When a backup last failed verification (0: never).",
            db,
            multiprocess_mode="max",
            registry=target,
        ),
        manifest_unreadable=Counter(
            "bakup_manifest_unreadable",
            "Manifests found unreadable (reported once per run and backup); their backups are "
            "listed as unrecorded and never deleted for it.",
            db,
            registry=target,
        ),
        verify_degraded=Gauge(
            "bakup_verify_degraded",
            "1 when the last verification was asked to test-restore but could only check "
            "less (no CREATEDB, no decryption key, no server): backups are not restore-tested.",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        restore_test_duration=Gauge(
            "bakup_restore_test_duration_seconds",
            "Duration of the last successful test restore (scratch database created, backup "
            "restored, row counts compared, database dropped): the measured time to restore.",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        verify_failures=Counter(
            "bakup_verify_failures",
            "Backups that failed verification.",
            db,
            registry=target,
        ),
        prune_deleted=Counter(
            "bakup_prune_deleted",
            "Backups deleted by retention.",
            db,
            registry=target,
        ),
        stored_backups=Gauge(
            "bakup_stored_backups",
            "Complete backups kept after retention.",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        stored_bytes=Gauge(
            "bakup_stored_bytes",
            "Bytes of the complete backups kept after retention.",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        backup_stored_bytes=Gauge(
            "bakup_backup_stored_bytes",
            "Bytes the database's kept backups occupy in storage: their files plus, for "
            "deduplicated backups, the chunk store (with several destinations, the last one's).",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        dedup_ratio=Gauge(
            "bakup_dedup_ratio",
            "What the kept backups would occupy stored each on its own, divided by "
            "bakup_backup_stored_bytes: deduplication's saving (1 for single-file backups).",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        schedule_period=Gauge(
            "bakup_schedule_period_seconds",
            "Time between two scheduled backups (0: not scheduled); alert rules use it.",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        backup_next_due=Gauge(
            "bakup_backup_next_due_timestamp_seconds",
            "When the next scheduled backup is due: the schedule's first fire time after the "
            "newest successful backup (0: none yet, or not scheduled). Alert rules compare the "
            "time with it, so irregular schedules (weekdays only) work.",
            db,
            multiprocess_mode="mostrecent",
            registry=target,
        ),
        notifications=Counter(
            "bakup_notifications",
            "Notification deliveries, by channel and outcome.",
            ("channel", "outcome"),
            registry=target,
        ),
        build_info=Gauge(
            "bakup_build_info",
            "bakup's version; always 1.",
            ("version",),
            multiprocess_mode="max",
            registry=target,
        ),
    )


__all__ = ["STAGES", "Metrics", "__version__", "create_metrics"]
