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

from bakup.dburl import ConnectionParams
from bakup.errors import BakupError, ConfigError
from bakup.pgtools import connect, explain_failure, find_program, program_version
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
    described = ", ".join(
        f"{target.name} ({target.require_database().display()})" for target in settings.targets
    )
    results = [CheckResult("config", True, f"backing up {described}")]
    server_major = 0
    for target in settings.targets:
        result, major = _check_database(target.require_database(), target.name)
        results.append(result)
        server_major = max(server_major, major or 0)

    try:
        pg_dump = find_program("pg_dump", settings.pg_bin_dir)
        dump_major, text = program_version(pg_dump)
        version = re.sub(r"^pg_dump\s+\((PostgreSQL)\)", r"\1", text)
        if dump_major < server_major:
            results.append(
                CheckResult(
                    "pg_dump",
                    False,
                    f"{pg_dump} is version {dump_major} but a server is {server_major}: install "
                    f"postgresql-client-{server_major} or newer, or set PG_BIN_DIR",
                )
            )
        else:
            results.append(CheckResult("pg_dump", True, f"{pg_dump} ({version})"))
    except BakupError as error:
        results.append(CheckResult("pg_dump", False, error.message))

    for target in settings.targets:
        storage = open_storage(target.location)
        try:
            storage.prepare()
            results.append(
                CheckResult("backup directory", True, f"{storage.describe()} is writable")
            )
        except BakupError as error:
            results.append(CheckResult("backup directory", False, error.message))
    return results


def _check_database(database: ConnectionParams, name: str) -> tuple[CheckResult, int | None]:
    """Log in to ``database``; returns the result and the server's major version."""
    label = "database" if name == database.dbname else f"database {name}"
    try:
        with connect(database) as connection:
            major = connection.info.server_version // 10000
    except psycopg.Error as error:
        _, message = explain_failure(
            "psql", str(error), 1, database.password, variable=database.variable
        )
        return CheckResult(label, False, f"{database.display()}: {message}"), None
    return CheckResult(
        label, True, f"connected to {database.display()} (PostgreSQL {major})"
    ), major
