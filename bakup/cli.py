"""The ``bakup`` command line: backup, list, restore, prune, check.

Exit status: 0 success, 1 the operation failed, 2 bad usage or configuration. Expected failures
print one line that says what failed and what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bakup import __version__, events, export, show
from bakup.actions import run_backup, run_prune, run_restore, run_verify
from bakup.catalog import Backup, list_backups
from bakup.checks import run_checks
from bakup.dburl import DatabaseUrlError, parse_database_url
from bakup.errors import BakupError, ConfigError, Terminated
from bakup.logs import configure_logging, megabytes
from bakup.restore import RestoreOptions, choose_backup
from bakup.settings import Settings
from bakup.storage import Storage, open_storage
from bakup.targets import Target

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
RESTART_DELAY_SECONDS = 5
NOTIFY_VARIABLES = (
    "SMTP_URL",
    "SMTP_URL_FILE",
    "SLACK_WEBHOOK_URL",
    "SLACK_WEBHOOK_URL_FILE",
    "WEBHOOK_URL",
    "WEBHOOK_URL_FILE",
    "HEALTHCHECK_URL",
    "HEALTHCHECK_URL_FILE",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="bakup",
        description="Scheduled, verified, monitored PostgreSQL backups.",
        epilog="Configuration comes from environment variables: `bakup config` lists every "
        "one, with its meaning and default, and shows the effective configuration and where "
        "each value came from, secrets hidden.",
    )
    parser.add_argument("--version", action="version", version=f"bakup {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    backup = commands.add_parser("backup", help="take a backup now, then prune")
    _database_option(backup, "back up only this configured database (default: all)")

    listing = commands.add_parser("list", help="list complete backups, oldest first")
    listing.add_argument("--json", action="store_true", help="print a JSON array for scripts")
    _database_option(listing, "list only this configured database's backups")

    verify = commands.add_parser("verify", help="check that a backup is intact and restorable")
    verify.add_argument("name", nargs="?", default="latest", help="backup name (default: latest)")
    verify.add_argument(
        "--restore",
        action="store_true",
        help="also restore it into a scratch database and compare every table's row count",
    )
    _database_option(verify, "which configured database's backup (needed when several)")

    restore = commands.add_parser("restore", help="restore a backup into a database")
    _database_option(restore, "which configured database's backup (needed when several)")
    restore.add_argument("name", help="backup name as `bakup list` shows it, or `latest`")
    restore.add_argument(
        "--target-url",
        help="database to restore into (default: TARGET_DATABASE_URL; prefer the variable, "
        "which keeps the password out of the process list)",
    )
    restore.add_argument(
        "--clean", action="store_true", help="drop the backup's objects in the target first"
    )
    restore.add_argument(
        "--no-owner",
        action="store_true",
        help="do not restore ownership and privileges (target server lacks the roles)",
    )
    restore.add_argument(
        "--roles",
        action="store_true",
        help="create the roles the backup's objects need that the target server lacks, from "
        "the backup's globals (existing roles are never changed)",
    )
    restore.add_argument(
        "--jobs",
        type=_jobs,
        default=None,
        help="parallel pg_restore jobs (default: one per core, at most 8, or 1 below 4 cores); "
        "above 1 a local copy is restored into a staging database swapped in at the end; 1 "
        "streams it in one transaction",
    )
    restore.add_argument(
        "--table",
        action="append",
        default=[],
        metavar="[SCHEMA.]TABLE",
        help="restore only this table, with its indexes, constraints and sequences (repeatable)",
    )
    restore.add_argument(
        "--schema",
        action="append",
        default=[],
        help="restore only this schema's objects (repeatable)",
    )

    export = commands.add_parser(
        "export", help="write a backup as the classic .sql.gz file (gunzip + pg_restore)"
    )
    export.add_argument("name", nargs="?", default="latest", help="backup name (default: latest)")
    export.add_argument(
        "--output",
        help="file to write (default: the classic name in the current folder; - for stdout)",
    )
    _database_option(export, "which configured database's backup (needed when several)")

    show = commands.add_parser("show", help="what a backup holds: schemas, tables, rows, sizes")
    show.add_argument("name", nargs="?", default="latest", help="backup name (default: latest)")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")
    _database_option(show, "which configured database's backup (needed when several)")

    prune = commands.add_parser("prune", help="delete backups the retention policy lets go")
    prune.add_argument("--dry-run", action="store_true", help="show what would be deleted")
    _database_option(prune, "prune only this configured database (default: all)")

    commands.add_parser("check", help="check configuration, pg_dump, database and directory")

    config = commands.add_parser(
        "config",
        help="list the environment variables and show the effective configuration (secrets hidden)",
    )
    config.add_argument("--json", action="store_true", help="print JSON for scripts")
    config.add_argument(
        "--all", action="store_true", help="also list the variables bakup sets for itself"
    )

    summary = commands.add_parser("summary", help="the weekly summary: print, preview or send it")
    summary.add_argument(
        "--preview", metavar="FILE", help="write the HTML, charts included, and send nothing"
    )
    summary.add_argument(
        "--send", action="store_true", help="send it now over the configured channels"
    )

    worker = commands.add_parser("worker", help="run the Celery worker that takes the backups")
    worker.add_argument(
        "--beat", action="store_true", help="also run the scheduler in this process"
    )
    worker.add_argument(
        "--concurrency", type=int, metavar="N", help="backups run at once (default: CPU count)"
    )
    worker.add_argument("--loglevel", default="INFO", help="Celery's log level (default: INFO)")

    beat = commands.add_parser("beat", help="run the scheduler (exactly one per deployment)")
    beat.add_argument("--loglevel", default="INFO", help="Celery's log level (default: INFO)")
    return parser


def _database_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--database", "-d", metavar="NAME", help=help_text)


def _selected(settings: Settings, name: str | None) -> list[Target]:
    """The targets a command acts on: the one named, or all of them."""
    return [settings.target(name)] if name else list(settings.targets)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    # A program reads `--json`'s stdout, and `export --output -` writes the backup there: log
    # lines (warnings) must not mix with either.
    stdout_is_data = getattr(args, "json", False) or getattr(args, "output", None) == "-"
    configure_logging(stream=sys.stderr if stdout_is_data else None)
    if args.command not in ("worker", "beat"):  # Celery handles its own signals
        signal.signal(signal.SIGTERM, _terminate)
    handlers = {
        "backup": _backup,
        "list": _list,
        "verify": _verify,
        "restore": _restore,
        "show": _show,
        "export": _export,
        "prune": _prune,
        "check": _check,
        "config": _config,
        "summary": _summary,
        "worker": _worker,
        "beat": _beat,
    }
    try:
        return handlers[args.command](args)
    except ConfigError as error:
        for problem in error.problems:
            print(f"bakup: configuration error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    except BakupError as error:
        print(f"bakup: {error.message}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("bakup: interrupted; nothing partial was kept", file=sys.stderr)
        return 130


def _terminate(signum: int, frame: object) -> None:
    """SIGTERM: stop the run the way a failure does (clean up, record, alert), once."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish undisturbed
    Terminated.requested = True
    raise Terminated()


def _backup(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(require_database=True)
    except ConfigError as error:
        _report_config_failure(error)
        raise
    if settings.pushgateway_url or settings.metrics_textfile:
        with _one_shot_metrics(settings):
            return _backup_all(settings, args)
    return _backup_all(settings, args)


def _report_config_failure(
    error: ConfigError, settings: Settings | None = None, labels: Sequence[str] = ()
) -> None:
    """Tell whatever monitoring is itself configured validly (health check, alert channels,
    metrics textfile or Pushgateway) that this run stopped at its configuration: a cron job
    whose stderr nobody reads must not fail in silence.

    Given the error and, when the settings themselves were valid, the settings (whose
    metrics the caller already publishes) and the databases that will not be backed up.
    Logs, never raises.
    """
    report_settings = settings or Settings.for_failure_report()
    with contextlib.ExitStack() as stack:
        if any(os.environ.get(name) for name in NOTIFY_VARIABLES):
            from notifications.wire import subscribe_for_cli

            stack.callback(subscribe_for_cli(report_settings, lenient=True))
        if settings is None and (
            report_settings.pushgateway_url or report_settings.metrics_textfile
        ):
            stack.enter_context(_one_shot_metrics(report_settings))
        for label in labels or [_failure_label()]:
            events.emit(
                events.Event(events.BACKUP_FAILED, label, stage="config", error=error.message)
            )


def _failure_label() -> str:
    """The database name a configuration failure is reported under: DATABASE_URL's database
    when that much can be read (the label its backups use), else ``unknown``."""
    try:
        return parse_database_url(os.environ.get("DATABASE_URL", "")).dbname or "unknown"
    except DatabaseUrlError:
        return "unknown"


@contextlib.contextmanager
def _one_shot_metrics(settings: Settings) -> Iterator[None]:
    """Record this run's metrics and publish them when it ends, whatever its outcome."""
    from prometheus_client import CollectorRegistry

    from metrics.definitions import create_metrics
    from metrics.exposition import publish_once
    from metrics.recorder import Recorder

    registry = CollectorRegistry()
    recorder = Recorder(create_metrics(registry))
    # Subscribed first: reading the stored backups may report an unreadable manifest.
    unsubscribe = events.subscribe(recorder)
    recorder.initialize(settings)
    recorder.restore_stored(settings)
    try:
        yield
    finally:
        unsubscribe()
        publish_once(registry, settings.pushgateway_url, settings.metrics_textfile)


def _backup_all(settings: Settings, args: argparse.Namespace) -> int:
    try:
        _notify_from_cli(settings)
    except ConfigError as error:  # e.g. SLACK_WEBHOOK_URL invalid: the health check still hears
        targets = _selected(settings, args.database)
        _report_config_failure(error, settings, [target.name for target in targets])
        raise
    status = EXIT_OK
    for target in _selected(settings, args.database):
        try:
            outcome = run_backup(settings, target)
        except BakupError as error:
            if (
                error.exit_code == EXIT_USAGE
                or isinstance(error, Terminated)
                or len(settings.targets) == 1
            ):
                raise
            print(f"bakup: {target.name}: {error.message}", file=sys.stderr)
            status = EXIT_FAILED
            continue
        if outcome.prune_error is not None:
            print(
                f"bakup: backup {outcome.backup.name} is complete, but pruning failed: "
                f"{outcome.prune_error.message}",
                file=sys.stderr,
            )
            status = EXIT_FAILED
    return status


def _list(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require_database=False)
    listed = [
        (target, backup)
        for target in _selected(settings, args.database)
        for backup in list_backups(
            open_storage(target.location),
            target.database.dbname if target.database else "",
            target.name,
        )
    ]
    if args.json:
        json.dump(
            [{"target": target.name, **backup.summary_json()} for target, backup in listed],
            sys.stdout,
            indent=2,
        )
        print()
        return EXIT_OK
    if not listed:
        print(f"no complete backups in {settings.backup_dir}")
        return EXIT_OK
    print(_table([backup for _, backup in listed]))
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require_database=False)
    target = settings.target(args.database)
    _notify_from_cli(settings)
    with contextlib.ExitStack() as stack:
        if settings.pushgateway_url or settings.metrics_textfile:  # cron: publish, as backup does
            stack.enter_context(_one_shot_metrics(settings))
        run_verify(settings, target, args.name, level="restore" if args.restore else "integrity")
    return EXIT_OK


def _table(backups: list[Backup]) -> str:
    # NEW: what the backup itself added to storage (a deduplicated one shares the rest);
    # LOGICAL: the archive it holds, what a restore reads.
    header = ("NAME", "DATABASE", "CREATED (UTC)", "NEW", "LOGICAL", "TABLES", "VERIFIED", "STATE")
    rows = [header] + [
        (
            backup.name,
            backup.database,
            backup.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            megabytes(backup.new_bytes) if backup.new_bytes is not None else "?",
            megabytes(backup.logical_bytes) if backup.logical_bytes is not None else "?",
            str(len(backup.table_row_counts)) if backup.described else "?",
            _verified(backup),
            backup.status if backup.note is None else f"{backup.status}: {backup.note}",
        )
        for backup in backups
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _verified(backup: Backup) -> str:
    """The VERIFIED column: the outcome, and the level reached (a restore-level policy that
    could only check integrity must show, not pass as a restore test)."""
    if backup.verified is None:
        return "not yet"
    if not backup.verified:
        return "FAILED"
    level = (backup.verification or {}).get("level")
    return f"yes ({level})" if level else "yes"


def _restore(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require_database=False)
    url = args.target_url or os.environ.get("TARGET_DATABASE_URL", "")
    if not url:
        raise ConfigError(
            ["give --target-url or set TARGET_DATABASE_URL to the database to restore into"]
        )
    source = "--target-url" if args.target_url else "TARGET_DATABASE_URL"
    try:
        destination = parse_database_url(url, name=source)
    except DatabaseUrlError as error:
        raise ConfigError([str(error)]) from None
    options = RestoreOptions(
        clean=args.clean,
        no_owner=args.no_owner,
        roles=args.roles,
        jobs=args.jobs,
        tables=tuple(args.table),
        schemas=tuple(args.schema),
    )
    run_restore(settings, settings.target(args.database), args.name, destination, options)
    return EXIT_OK


def _jobs(text: str) -> int:
    """Parse --jobs: a whole number from 1 to 64."""
    if not text.isdigit() or not 1 <= int(text) <= 64:
        raise argparse.ArgumentTypeError(f"--jobs takes a whole number from 1 to 64, not {text!r}")
    return int(text)


def _named_backup(args: argparse.Namespace) -> tuple[Settings, Storage, Backup]:
    """The settings, storage and backup that ``--database`` and the NAME argument select."""
    settings = Settings.from_env(require_database=False)
    target = settings.target(args.database)
    storage = open_storage(target.location)
    backup = choose_backup(
        list_backups(storage, target.database.dbname if target.database else "", target.name),
        args.name,
    )
    return settings, storage, backup


def _export(args: argparse.Namespace) -> int:
    settings, storage, backup = _named_backup(args)
    identities = settings.identities_for(backup)
    if args.output == "-":
        if sys.stdout.isatty():
            raise ConfigError(["refusing to write a backup to a terminal: give --output FILE"])
        size = export.export_backup(storage, backup, sys.stdout.buffer, identities)
        logging.getLogger("bakup").info("Exported %s (%s)", backup.name, megabytes(size))
        return EXIT_OK
    path = Path(args.output or export.export_name(backup))
    try:
        with export.output_file(path) as handle:
            size = export.export_backup(storage, backup, handle, identities)
    except OSError as error:
        raise ConfigError([f"cannot write {path}: {error.strerror or error}"]) from None
    print(f"{path}: {backup.name} as a gzip-compressed archive ({megabytes(size)} uncompressed)")
    return EXIT_OK


def _show(args: argparse.Namespace) -> int:
    _settings, _storage, backup = _named_backup(args)
    if args.json:
        json.dump(show.describe(backup), sys.stdout, indent=2)
        print()
    else:
        print(show.render(backup))
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require_database=False)
    for target in _selected(settings, args.database):
        run_prune(settings, target, dry_run=args.dry_run)
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    results = run_checks()
    for result in results:
        print(result.line())
    if any(result.name == "config" and not result.ok for result in results):
        return EXIT_USAGE
    return EXIT_OK if all(result.ok for result in results) else EXIT_FAILED


def _config(args: argparse.Namespace) -> int:
    from bakup.config_report import build_report

    report = build_report(os.environ, include_internal=args.all)
    sys.stdout.write(report.json() if args.json else report.text())
    return EXIT_USAGE if report.problems else EXIT_OK


def _summary(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require_database=False)
    from notifications.config import NotifySettings
    from notifications.delivery import deliver_now
    from notifications.render import Renderer
    from notifications.summary import render_summary

    notify = NotifySettings.from_env()
    renderer = Renderer(notify.template_dir)
    if args.preview:
        page = render_summary(settings, renderer, inline_images=True)
        try:
            Path(args.preview).write_text(page.html, encoding="utf-8")
        except OSError as error:
            raise BakupError(
                f"cannot write the preview to {args.preview}: {error.strerror or error}: "
                "give a file in an existing folder you may write to",
                stage="summary",
            ) from None
        print(f"summary written to {args.preview}")
        return EXIT_OK
    message = render_summary(settings, renderer)
    if not args.send:
        print(message.text, end="")
        return EXIT_OK
    if not notify.channels:
        raise ConfigError(["no channel to send to: set SMTP_URL, SLACK_WEBHOOK_URL or WEBHOOK_URL"])
    delivered = [deliver_now(notify, channel.name, message) for channel in notify.channels]
    return EXIT_OK if all(delivered) else EXIT_FAILED


def _service_settings() -> Settings:
    """Settings for the worker and beat: REDIS_URL and every database's URL must be set."""
    settings = Settings.from_env(require_database=True)
    settings.require_redis()
    for target in settings.targets:
        target.require_database()
    from notifications.config import NotifySettings

    NotifySettings.from_env()  # fail at start, with every problem, not at the first alert
    return settings


def _notify_from_cli(settings: Settings) -> None:
    """Alerts for this one-shot run, if channels are configured (imported only then)."""
    if any(os.environ.get(name) for name in NOTIFY_VARIABLES):
        from notifications.wire import subscribe_for_cli

        subscribe_for_cli(settings)


def _worker(args: argparse.Namespace) -> int:
    settings = _service_settings()
    metrics_dir = None
    if settings.metrics_port:
        from metrics.exposition import create_multiprocess_dir

        # Before prometheus-client is first imported: it reads the directory at import time.
        metrics_dir = create_multiprocess_dir()
    if args.beat:
        _prepare_beat_schedule_file(settings)
    # Imported here: the engine never depends on Celery; only these two commands do.
    from celery.signals import worker_init, worker_shutting_down

    from worker.app import QUEUE, app

    seen: dict[str, Any] = {}
    worker_init.connect(lambda sender=None, **_: seen.update(worker=sender), weak=False)
    worker_shutting_down.connect(lambda **_: seen.update(asked=True), weak=False)

    argv = [
        "worker",
        f"--loglevel={args.loglevel}",
        f"--queues={QUEUE}",
        "--hostname=bakup@%h",
        "--without-gossip",
        "--without-mingle",
    ]
    if args.concurrency:
        argv.append(f"--concurrency={args.concurrency}")
    if args.beat:
        argv += ["--beat", f"--schedule={settings.beat_schedule_file}"]
    app.worker_main(argv)
    exitcode = getattr(seen.get("worker"), "exitcode", None) or 0
    if exitcode and not seen.get("asked"):
        # Celery stops for good after some broker failures (an "Unrecoverable error" while
        # Redis restarts) and would exit 0: a worker that silently stopped backing up. Start
        # afresh in this same process instead, so supervision and logs stay where they are.
        print(
            f"bakup: the worker stopped unexpectedly (exit {exitcode}): restarting in "
            f"{RESTART_DELAY_SECONDS} s",
            file=sys.stderr,
            flush=True,
        )
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
        time.sleep(RESTART_DELAY_SECONDS)
        os.execv(sys.executable, [sys.executable, "-m", "bakup.cli", *sys.argv[1:]])
    if metrics_dir is not None:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return EXIT_FAILED if exitcode else EXIT_OK


def _prepare_beat_schedule_file(settings: Settings) -> None:
    """Create the folder of beat's schedule file (0700, as BACKUP_DIR is). Raises ConfigError
    when it cannot be created."""
    folder = settings.beat_schedule_file.parent
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(
            [
                f"BEAT_SCHEDULE_FILE: cannot create the folder {folder} "
                f"({error.strerror or error}): set BEAT_SCHEDULE_FILE to a file in a folder "
                "this user may write to"
            ]
        ) from None


def _beat(args: argparse.Namespace) -> int:
    settings = _service_settings()
    _prepare_beat_schedule_file(settings)
    from worker.app import app

    app.start(["beat", f"--loglevel={args.loglevel}", f"--schedule={settings.beat_schedule_file}"])
    return EXIT_OK


def entry_point() -> None:
    """Console-script entry: exit with main()'s status."""
    logging.captureWarnings(True)
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
