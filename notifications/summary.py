"""The weekly summary: per database, what happened in the last seven days and how size moved
over the last weeks, read from the run journals and manifests beside the backups."""

from __future__ import annotations

import base64
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bakup.catalog import DEDUP, Backup, list_backups, newest_restore_test
from bakup.dedup.usage import measure_usage, one_destination
from bakup.errors import BakupError
from bakup.journal import read_runs
from bakup.logs import megabytes
from bakup.settings import Settings
from bakup.storage import Storage, open_storage
from bakup.targets import Target
from notifications.channels.base import Notification
from notifications.chart import bar_chart_png, sparkline
from notifications.render import Renderer

WEEKS = 8


@dataclass
class DatabaseWeek:
    """One database's figures for the summary."""

    name: str
    taken: int
    failed: int
    success_rate: str
    newest_verified: str
    newest_verified_age: str
    size_this_week: str
    size_last_week: str
    size_change: str
    sparkline: str
    median_duration: str
    longest_duration: str
    stored: str
    kept: int
    chart: bytes
    error: str = ""
    verified_level: str = ""  # the level the newest verification reached
    # Set when restore tests were asked for but the newest verification could do less.
    verification_warning: str = ""
    # The last measured time to restore (the newest test restore's duration), or why none.
    time_to_restore: str = "not measured (no test restore yet)"
    # What the kept backups would take stored each on its own, over what they take (``stored``).
    dedup_ratio: str = "1.0x"


def summarize(settings: Settings, now: datetime | None = None) -> list[DatabaseWeek]:
    """Figures for every configured database. A database whose storage cannot be read gets
    an entry saying so rather than being left out."""
    now = now or datetime.now(UTC)
    return [_database_week(target, now) for target in settings.targets]


def _database_week(target: Target, now: datetime) -> DatabaseWeek:
    storage = open_storage(target.location)
    try:
        runs = [
            run
            for run in read_runs(storage, now - timedelta(weeks=WEEKS))
            if run.get("kind") == "backup"
        ]
        backups = list_backups(storage)
    except BakupError as error:
        runs, backups, problem = [], [], error.message
    else:
        problem = ""
    week_start = now - timedelta(days=7)
    this_week = [run for run in runs if run["at"] >= week_start]
    taken = [run for run in this_week if run["outcome"] == "success"]
    failed = [run for run in this_week if run["outcome"] == "failure"]
    weekly_sizes: list[float | None] = []
    for weeks_ago in range(WEEKS - 1, -1, -1):
        start, end = now - timedelta(weeks=weeks_ago + 1), now - timedelta(weeks=weeks_ago)
        sizes = [
            run["size_bytes"]
            for run in runs
            if run["outcome"] == "success" and start <= run["at"] < end
        ]
        weekly_sizes.append(sizes[-1] if sizes else None)
    this_size, last_size = weekly_sizes[-1], weekly_sizes[-2]
    durations = sorted(run["duration_seconds"] for run in taken)
    stored, dedup_ratio = _storage_used(storage, backups)
    verified = [backup for backup in backups if backup.verified]
    newest = verified[-1] if verified else None
    labels = [f"-{weeks}w" if weeks else "now" for weeks in range(WEEKS - 1, -1, -1)]
    return DatabaseWeek(
        name=target.name,
        taken=len(taken),
        failed=len(failed),
        success_rate=f"{100 * len(taken) / len(this_week):.0f} %" if this_week else "no runs",
        newest_verified=newest.name if newest else "none",
        newest_verified_age=_age(now - newest.created_at) if newest else "",
        size_this_week=megabytes(int(this_size)) if this_size is not None else "none",
        size_last_week=megabytes(int(last_size)) if last_size is not None else "none",
        size_change=_change(this_size, last_size),
        sparkline=sparkline(weekly_sizes),
        median_duration=f"{statistics.median(durations):.1f} s" if durations else "none",
        longest_duration=f"{durations[-1]:.1f} s" if durations else "none",
        stored=stored,
        kept=len(backups),
        chart=bar_chart_png(weekly_sizes, labels),
        error=problem,
        verified_level=_level(newest),
        verification_warning=_degraded(newest),
        time_to_restore=_time_to_restore(backups, now),
        dedup_ratio=dedup_ratio,
    )


def _storage_used(storage: Storage, backups: list[Backup]) -> tuple[str, str]:
    """What ``backups`` take in storage (files, and the chunk store of deduplicated ones) and
    the deduplication ratio, as text. When the chunk store cannot be listed, the files alone,
    saying so."""
    files = sum(backup.size_bytes for backup in backups)
    try:
        usage = measure_usage(one_destination(storage), backups)
    except BakupError as error:
        return f"{megabytes(files)} in files (chunks unknown: {error.message})", "unknown"
    if not any(backup.backup_format == DEDUP for backup in backups):
        return megabytes(usage.stored_bytes), "1.0x (no deduplicated backups)"
    apart = megabytes(usage.unshared_bytes)
    return megabytes(usage.stored_bytes), f"{usage.dedup_ratio:.1f}x ({apart} if stored apart)"


def _time_to_restore(backups: list[Backup], now: datetime) -> str:
    """The last measured time to restore: the duration of the newest successful test
    restore, with the backup it restored and how long ago; or why there is none."""
    found = newest_restore_test(backups)
    if found is None:
        return "not measured (no kept backup has passed a test restore)"
    newest, seconds = found
    when = _age(now - newest.verified_at) if newest.verified_at else ""
    return f"{_duration(seconds)} (test restore of {newest.name}, {when} ago)"


def _duration(seconds: float) -> str:
    """``42.3 s``, or minutes and seconds past two minutes: ``14 min 05 s``."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return (
        f"{minutes // 60} h {minutes % 60:02d} min"
        if minutes >= 60
        else f"{minutes} min {rest:02d} s"
    )


def _level(backup: Backup | None) -> str:
    return str((backup.verification or {}).get("level", "")) if backup is not None else ""


def _degraded(backup: Backup | None) -> str:
    """A warning when the newest verification was asked to test-restore and could not."""
    verification = (backup.verification if backup is not None else None) or {}
    if verification.get("requested") != "restore" or verification.get("level") == "restore":
        return ""
    notes = "; ".join(verification.get("notes") or [])
    return f"not restore-tested: verified {verification.get('level')} only ({notes})"


def render_summary(
    settings: Settings,
    renderer: Renderer,
    now: datetime | None = None,
    *,
    inline_images: bool = False,
) -> Notification:
    """The summary as a notification: charts as inline email images, or, for a preview file,
    as data URIs in the HTML."""
    now = now or datetime.now(UTC)
    weeks = summarize(settings, now)
    images = {f"size-{index}@bakup": week.chart for index, week in enumerate(weeks)}
    sources = [
        f"data:image/png;base64,{base64.b64encode(week.chart).decode()}"
        if inline_images
        else f"cid:size-{index}@bakup"
        for index, week in enumerate(weeks)
    ]
    databases: list[dict[str, Any]] = [
        {**{k: v for k, v in vars(week).items() if k != "chart"}, "chart_src": source}
        for week, source in zip(weeks, sources, strict=True)
    ]
    week_of = (now - timedelta(days=7)).strftime("%Y-%m-%d")
    context = {
        "databases": databases,
        "week_of": week_of,
        "generated_at": now.strftime("%Y-%m-%d %H:%M UTC"),
    }
    slack_text = "\n".join(
        f"*{d['name']}*: {d['taken']} taken, {d['failed']} failed ({d['success_rate']}); "
        f"size {d['size_this_week']} ({d['size_change']}) `{d['sparkline']}`; "
        f"stored {d['stored']} (deduplication {d['dedup_ratio'].split(' ')[0]}); "
        f"newest verified {d['newest_verified']}; time to restore {d['time_to_restore']}"
        for d in databases
    )
    return renderer.render(
        "summary",
        "",
        context,
        images={} if inline_images else images,
        fields={"slack_text": slack_text, "week_of": week_of},
    )


def _age(delta: timedelta) -> str:
    hours = delta.total_seconds() / 3600
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} hours"


def _change(this: float | None, last: float | None) -> str:
    if this is None or last is None or last == 0:
        return "no comparison"
    return f"{(this - last) / last * 100:+.1f} %"
