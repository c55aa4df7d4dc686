"""Is a connection going through a connection pooler (PgBouncer) rather than to PostgreSQL itself?

pg_dump needs a session of its own: it sets session parameters (search_path, datestyle,
extra_float_digits, timeouts) and, from PostgreSQL 17, prepares statements. Behind PgBouncer in
transaction mode those land on whichever server connection serves each transaction: settings
leak into the application's sessions, and a second dump finds the first one's prepared
statements ("prepared statement ... already exists"); a PgBouncer that refuses a startup
parameter fails at once ("unsupported startup parameter: options"). Backups should use the
server's own port (5432 by default), not the pooler's (6432).

How a pooler is told apart, with nothing but the connection `bakup check` opens anyway: the
server reports the port it listens on (``current_setting('port')``); when that is not the port
the URL connects to, something forwards the connection (a pooler, a proxy, a container's port
mapping). Only then does the check ask the address whether it is PgBouncer, by opening its
admin console (the ``pgbouncer`` database): PgBouncer answers it (or refuses it with "not
allowed" when the role is not one of its admin or stats users), PostgreSQL says no such
database exists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from bakup.dburl import ConnectionParams
from bakup.pgtools import connect

ADMIN_DATABASE = "pgbouncer"
# Pool modes in which a client does not keep one server connection for its whole session.
SHARED_MODES = ("transaction", "statement")


@dataclass(frozen=True)
class PoolerFinding:
    """What the check found: whether backups can go this way, and a sentence saying so."""

    ok: bool
    message: str


def inspect_connection(
    connection: psycopg.Connection[Any], database: ConnectionParams
) -> PoolerFinding | None:
    """Tell whether ``connection`` (open, to ``database``) goes through a pooler.

    Returns None when it reaches PostgreSQL on the port the URL names (or several hosts make
    the question moot); a finding that fails the check for PgBouncer in transaction or
    statement mode, or in a mode it will not say; an ok finding with a note otherwise.
    Raises psycopg.Error only if the open connection fails.
    """
    url_port = database.port
    if "," in url_port or "," in database.host:
        return None
    row = connection.execute("SELECT pg_catalog.current_setting('port')").fetchone()
    server_port = str(row[0]) if row else url_port
    if server_port == url_port:
        return None
    variable = database.variable
    mode = pgbouncer_pool_mode(database)
    if mode is None:
        return PoolerFinding(
            True,
            f"the server listens on port {server_port}, not {url_port}: something forwards "
            f"the connection; if it is a connection pooler, back up through port "
            f"{server_port} instead",
        )
    if mode == "session":
        return PoolerFinding(
            True,
            f"through PgBouncer on port {url_port} in session mode, which pg_dump can use; "
            f"the server's own port {server_port} avoids the pooler",
        )
    said = f"in {mode} mode" if mode else "whose pool mode this role may not read"
    return PoolerFinding(
        False,
        f"{variable} points at PgBouncer on port {url_port} ({said}): pg_dump needs a session "
        f"of its own, which transaction pooling does not give (its settings leak into other "
        f"sessions, its prepared statements collide): use the database server's own port "
        f"{server_port} in {variable}, not the pooler's",
    )


def pgbouncer_pool_mode(database: ConnectionParams) -> str | None:
    """Ask the address of ``database`` whether it is PgBouncer, through its admin console.

    Returns the pool mode that serves ``database`` ("session", "transaction", "statement"),
    "" when it is PgBouncer but this role may not read its settings, None when it is not
    PgBouncer (or cannot be reached). Raises nothing.
    """
    try:
        with connect(database.with_dbname(ADMIN_DATABASE), autocommit=True) as admin:
            mode = _pool_mode_of(admin, "SHOW DATABASES", "name", database.dbname, "pool_mode")
            return mode or _pool_mode_of(admin, "SHOW CONFIG", "key", "pool_mode", "value")
    except psycopg.Error as error:
        # PgBouncer's admin console refuses a role that is not an admin or stats user.
        return "" if "not allowed" in str(error) else None


def _pool_mode_of(
    admin: psycopg.Connection[Any], command: str, key: str, wanted: str, column: str
) -> str:
    """The ``column`` of the row whose ``key`` is ``wanted`` in a SHOW command's answer."""
    cursor = admin.execute(command)
    names = [item.name for item in cursor.description or ()]
    if key not in names or column not in names:
        return ""
    for row in cursor.fetchall():
        if row[names.index(key)] == wanted:
            return str(row[names.index(column)] or "")
    return ""
