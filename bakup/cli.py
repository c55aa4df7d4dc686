"""The ``bakup`` command line: backup, list, restore, prune, check.

Exit status: 0 success, 1 the operation failed, 2 bad usage or configuration. Expected failures
print one line that says what failed and what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from bakup import __version__
from bakup.actions import run_backup, run_prune, run_restore
from bakup.catalog import Backup, list_backups
from bakup.checks import run_checks
from bakup.dburl import DatabaseUrlError, parse_database_url
from bakup.errors import BakupError, ConfigError
from bakup.logs import configure_logging, megabytes
from bakup.settings import Settings
from bakup.storage import open_storage

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="bakup", description="Scheduled, verified, monitored PostgreSQL backups."
    )
    parser.add_argument("--version", action="version", version=f"bakup {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser("backup", help="take a backup of DATABASE_URL now, then prune")

    listing = commands.add_parser("list", help="list complete backups, oldest first")
    listing.add_argument("--json", action="store_true", help="print a JSON array for scripts")

    restore = commands.add_parser("restore", help="restore a backup into a database")
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

    prune = commands.add_parser("prune", help="delete backups the retention policy lets go")
    prune.add_argument("--dry-run", action="store_true", help="show what would be deleted")

    commands.add_parser("check", help="check configuration, pg_dump, database and directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    args = build_parser().parse_args(argv)
    configure_logging()
    handlers = {
        "backup": _backup,
        "list": _list,
        "restore": _restore,
        "prune": _prune,
        "check": _check,
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


def _backup(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require_database=True)
    outcome = run_backup(settings)
    if outcome.prune_error is not None:
        print(
            f"bakup: backup {outcome.backup.name} is complete, but pruning failed: "
            f"{outcome.prune_error.message}",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require_database=False)
    backups = list_backups(open_storage(settings.backup_dir))
    if args.json:
        json.dump([backup.summary_json() for backup in backups], sys.stdout, indent=2)
        print()
        return EXIT_OK
    if not backups:
        print(f"no complete backups in {settings.backup_dir}")
        return EXIT_OK
    print(_table(backups))
    return EXIT_OK


def _table(backups: list[Backup]) -> str:
    header = ("NAME", "DATABASE", "CREATED (UTC)", "SIZE", "RAW", "TABLES", "VERIFIED")
    rows = [header] + [
        (
            backup.name,
            backup.database,
            backup.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            megabytes(backup.size_bytes),
            megabytes(backup.raw_size_bytes),
            str(len(backup.table_row_counts)),
            {True: "yes", False: "FAILED", None: "not yet"}[backup.verified],
        )
        for backup in backups
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _restore(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require_database=False)
    url = args.target_url or os.environ.get("TARGET_DATABASE_URL", "")
    if not url:
        raise ConfigError(
            ["give --target-url or set TARGET_DATABASE_URL to the database to restore into"]
        )
    source = "--target-url" if args.target_url else "TARGET_DATABASE_URL"
    try:
        target = parse_database_url(url, name=source)
    except DatabaseUrlError as error:
        raise ConfigError([str(error)]) from None
    run_restore(settings, args.name, target, clean=args.clean, no_owner=args.no_owner)
    return EXIT_OK


def _prune(args: argparse.Namespace) -> int:
    settings = Settings.from_env(require_database=False)
    run_prune(settings, dry_run=args.dry_run)
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    results = run_checks()
    for result in results:
        print(result.line())
    if any(result.name == "config" and not result.ok for result in results):
        return EXIT_USAGE
    return EXIT_OK if all(result.ok for result in results) else EXIT_FAILED


def entry_point() -> None:
    """Console-script entry: exit with main()'s status."""
    logging.captureWarnings(True)
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
