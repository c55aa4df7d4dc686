"""``bakup check``: is this machine ready to take backups? One line per check, ok or what to fix.

Checks the configuration, that each database is reachable with these credentials and that they
may read every table and sequence pg_dump reads, which pg_dump serves each database (one not
older than its server's major version, see bakup.clients), and that the backup directory is
writable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bakup.clients import remember_server_major, select_client
from bakup.dburl import ConnectionParams
from bakup.errors import BakupError, ConfigError
from bakup.pgtools import connect, explain_failure, find_program, program_version
from bakup.poolers import inspect_connection
from bakup.progress import Progress
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
    majors: list[tuple[ConnectionParams, str, int | None]] = []
    # Many databases, or a slow server, take a while: the same progress as a backup's.
    with Progress("Checking", total=len(settings.targets), unit="databases") as progress:
        for target in settings.targets:
            progress.set_item(target.name)
            database = target.require_database()
            result, major = _check_database(database, target.name)
            results.append(result)
            if major is not None:
                remember_server_major(database, major)
            majors.append((database, target.name, major))
            progress.advance(1)
    for database, name, major in majors:
        results.append(_check_client(database, name, major, settings.pg_bin_dir, env))

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


# Tables, partitioned tables, materialized views and sequences the role cannot read: pg_dump
# would stop at the first of them, after the check had said all is well.
_UNREADABLE = """
    SELECT format('%I.%I', n.nspname, c.relname)
    FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm', 'S')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp%'
      AND NOT CASE c.relkind
          WHEN 'S' THEN pg_catalog.has_sequence_privilege(c.oid, 'SELECT')
          ELSE pg_catalog.has_table_privilege(c.oid, 'SELECT')
      END
    ORDER BY 1
"""
# How many unreadable relations the check names; it counts them all.
_NAMED_AT_MOST = 5


def _check_database(database: ConnectionParams, name: str) -> tuple[CheckResult, int | None]:
    """Log in to ``database`` and check that its role may read every table and sequence;
    returns the result and the server's major version (None when the login failed)."""
    label = "database" if name == database.dbname else f"database {name}"
    try:
        with connect(database) as connection:
            major = connection.info.server_version // 10000
            unreadable = [str(row[0]) for row in connection.execute(_UNREADABLE).fetchall()]
            pooler = inspect_connection(connection, database)
    except psycopg.Error as error:
        _, message = explain_failure(
            "psql", str(error), 1, database.password, variable=database.variable
        )
        return CheckResult(label, False, f"{database.display()}: {message}"), None
    if pooler is not None and not pooler.ok:
        return CheckResult(label, False, f"{database.display()}: {pooler.message}"), major
    if unreadable:
        named = ", ".join(unreadable[:_NAMED_AT_MOST])
        more = len(unreadable) - _NAMED_AT_MOST
        if more > 0:
            named += f" and {more} more"
        role = database.user or "the backup role"
        return CheckResult(
            label,
            False,
            f"{database.display()}: {role} cannot read {len(unreadable)} "
            f"{'relation' if len(unreadable) == 1 else 'relations'} pg_dump must read "
            f"({named}): GRANT SELECT on them to {role}, or use a role with pg_read_all_data",
        ), major
    note = f"; {pooler.message}" if pooler is not None else ""
    return CheckResult(
        label, True, f"connected to {database.display()} (PostgreSQL {major}){note}"
    ), major


def _check_client(
    database: ConnectionParams,
    name: str,
    major: int | None,
    pg_bin_dir: Path | None,
    env: Mapping[str, str] | None,
) -> CheckResult:
    """Say which pg_dump serves ``database``, whose server is of major ``major`` (None: it
    could not be reached), or what to install when none can; PG_BIN_DIR (``pg_bin_dir``) is
    used as-is, and fails the check when it is older than the server."""
    label = "pg_dump" if name == database.dbname else f"pg_dump for {name}"
    unknown = " (the server's version is unknown until it answers)"
    try:
        if pg_bin_dir is not None:
            pg_dump = find_program("pg_dump", pg_bin_dir)
            dump_major, text = program_version(pg_dump)
            version = re.sub(r"^pg_dump\s+\((PostgreSQL)\)", r"\1", text)
            if major is not None and dump_major < major:
                return CheckResult(
                    label,
                    False,
                    f"PG_BIN_DIR's {pg_dump} is version {dump_major} but {database.display()} "
                    f"runs PostgreSQL {major}: point PG_BIN_DIR at a client {major} or newer "
                    f"(install postgresql-client-{major}), or unset it to let bakup choose",
                )
            served = f" serves PostgreSQL {major}" if major is not None else unknown
            return CheckResult(label, True, f"{pg_dump} ({version}, PG_BIN_DIR){served}")
        client = select_client(major, database.display(), env=env)
        client.program("pg_dump")
    except BakupError as error:
        return CheckResult(label, False, error.message)
    served = f" serves PostgreSQL {major}" if major is not None else unknown
    return CheckResult(label, True, f"{client.describe()}{served}")
