"""``bakup check``: is this machine ready to take backups? One line per check, ok or what to fix.

Checks the configuration, that pg_dump is present and not older than the server's major
version, that the database is reachable with these credentials, and that the backup
directory is writable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from bakup.errors import BakupError, ConfigError
from bakup.pgtools import explain_failure, find_program, program_version
from bakup.settings import Settings
from bakup.storage import open_storage


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check."""

    name: str
    ok: bool
    message: str

    def line(self) -> str:
        """Return the result as the line ``bakup check`` prints."""
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name}: {self.message}"


def run_checks(env: Mapping[str, str] | None = None) -> list[CheckResult]:
    """Run every check; given the environment, returns one result per check. Raises nothing."""
    try:
        settings = Settings.from_env(env)
    except ConfigError as error:
        return [CheckResult("config", False, problem) for problem in error.problems]
    database = settings.require_database()
    results = [CheckResult("config", True, f"backing up {database.display()}")]

    server_major: int | None = None
    try:
        with psycopg.connect(**database.connect_kwargs(), connect_timeout=15) as connection:
            server_version = connection.info.server_version
            server_major = server_version // 10000
        results.append(
            CheckResult(
                "database", True, f"connected to {database.display()} (PostgreSQL {server_major})"
            )
        )
    except psycopg.Error as error:
        _, message = explain_failure("psql", str(error), 1, database.password)
        results.append(CheckResult("database", False, f"{database.display()}: {message}"))

    try:
        pg_dump = find_program("pg_dump", settings.pg_bin_dir)
        dump_major, text = program_version(pg_dump)
        version = re.sub(r"^pg_dump\s+\((PostgreSQL)\)", r"\1", text)
        if server_major is not None and dump_major < server_major:
            results.append(
                CheckResult(
                    "pg_dump",
                    False,
                    f"{pg_dump} is version {dump_major} but the server is {server_major}: install "
                    f"postgresql-client-{server_major} or newer, or set PG_BIN_DIR",
                )
            )
        else:
            results.append(CheckResult("pg_dump", True, f"{pg_dump} ({version})"))
    except BakupError as error:
        results.append(CheckResult("pg_dump", False, error.message))

    storage = open_storage(settings.backup_dir)
    try:
        storage.prepare()
        results.append(CheckResult("backup directory", True, f"{storage.describe()} is writable"))
    except BakupError as error:
        results.append(CheckResult("backup directory", False, error.message))
    return results
