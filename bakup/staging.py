"""A parallel restore's staging database, swapped in for the target only when it succeeded.

``pg_restore --jobs`` cannot run in one transaction, so restoring straight into the target
would leave it half restored when a restore fails or bakup is killed. Instead bakup creates a
staging database as a copy of the target (``CREATE DATABASE ... TEMPLATE target``: same
encoding, locale and contents, so restoring into it is restoring into the target), restores
into it, and at the end renames the two in one transaction. Until that commit the target is
untouched; after it, the target is the restored database.

Recorded state, not inference: the staging database carries bakup's advisory-lock claim for as
long as its restore runs (the same scheme as the test restores' scratch databases, see
bakup/verify.py), so a staging database whose claim is free belongs to a dead run and the next
restore or verification on that server drops it. What it replaces is handled by what the
operator asked: a target that held no tables is dropped after the swap (the new target is a
copy of it plus the backup); a target restored with ``--clean`` is kept, renamed, and the log
says how to drop it once the operator is satisfied.

Database-level properties that a template copy does not carry (owner, privileges, settings,
connection limit, comment) are copied to the staging database before the swap.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from bakup.dburl import ConnectionParams
from bakup.errors import RestoreError
from bakup.pgtools import connect, explain_failure
from bakup.scratch import (
    STAGING_PREFIX,
    drop_abandoned_scratch_databases,
    drop_database,
    scratch_lock_key,
)

log = logging.getLogger("bakup")

# Databases to manage the target from: the target itself cannot be renamed while we are on it.
MAINTENANCE_DATABASES = ("postgres", "template1")
# How long the swap waits for sessions that connected to the target meanwhile to leave.
SWAP_WAIT_SECONDS = 30.0


class StagingRefused(RestoreError):
    """A parallel restore cannot stage on this server (no privilege, sessions on the target);
    a streamed single-transaction restore (--jobs 1) still can."""


def _admin(target: ConnectionParams) -> psycopg.Connection[Any]:
    """Connect to a maintenance database of the target's server, in autocommit."""
    last: psycopg.Error | None = None
    for name in MAINTENANCE_DATABASES:
        try:
            return connect(target.with_dbname(name), autocommit=True)
        except psycopg.Error as error:
            last = error
    _stage, message = explain_failure(
        "pg_restore", str(last), 1, target.password, variable=target.variable
    )
    raise RestoreError(
        f"cannot connect to the target's server {target.display()}: {message}", stage="connect"
    )


def _sessions(admin: psycopg.Connection[Any], database: str) -> int:
    row = admin.execute(
        # Client sessions only: the server ends autovacuum workers itself when it must.
        "SELECT count(*) FROM pg_catalog.pg_stat_activity "
        "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
        (database,),
    ).fetchone()
    return int(row[0]) if row else 0


def _check_privileges(admin: psycopg.Connection[Any], target: str) -> None:
    row = admin.execute(
        """SELECT r.rolsuper, r.rolcreatedb, d.datdba = r.oid
           FROM pg_catalog.pg_roles r, pg_catalog.pg_database d
           WHERE r.rolname = current_user AND d.datname = %s""",
        (target,),
    ).fetchone()
    if row is None:
        raise RestoreError(f"the target database {target!r} does not exist", stage="restore")
    superuser, createdb, owner = row
    if not (superuser or (createdb and owner)):
        raise StagingRefused(
            "a parallel restore builds a new database and swaps it in for the target, which "
            "needs a role with CREATEDB that owns the target (or a superuser): grant that, "
            "or restore with --jobs 1 (one transaction, streamed)",
            stage="restore",
        )


def _name_for(target: str, suffix: str) -> str:
    """``target`` followed by ``suffix``, the target's name shortened (never mid-character) so
    the whole fits PostgreSQL's 63-byte limit and the suffix stays whole."""
    room = 63 - len(suffix.encode())
    return target.encode()[:room].decode("utf-8", "ignore") + suffix


def _preflight(admin: psycopg.Connection[Any], name: str) -> None:
    """Raise StagingRefused unless the role may stage and swap ``name`` and no session uses
    it."""
    _check_privileges(admin, name)
    sessions = _sessions(admin, name)
    if sessions:
        raise StagingRefused(
            f"{sessions} session(s) are connected to the target database {name}: a "
            "parallel restore copies it and swaps the copy in, which needs none; stop "
            "them, or restore with --jobs 1",
            stage="restore",
        )


def preflight(target: ConnectionParams) -> None:
    """Check, before any work, that a staged restore into ``target`` is possible. Raises
    StagingRefused when it is not (the role's privileges, sessions on the target),
    RestoreError when the server cannot be reached."""
    with _admin(target) as admin:
        try:
            _preflight(admin, target.dbname)
        except psycopg.Error as error:
            raise _server_error(target, "checking the target", error) from None


@contextlib.contextmanager
def staged(target: ConnectionParams, *, keep_replaced: bool) -> Iterator[ConnectionParams]:
    """Give a staging copy of the target database to restore into; swap it in when the block
    ends normally, drop it when the block raises.

    ``keep_replaced`` keeps the database it replaces (renamed, its name logged) instead of
    dropping it: set it when the target held data (``--clean``). Raises StagingRefused before
    anything is created when the role may not do this or sessions are connected to the target,
    RestoreError when the server fails or the swap cannot be made (the restored database is
    then kept under a name the message gives, and the target is as it was).
    """
    name = target.dbname
    admin = _admin(target)
    with admin:
        try:
            _preflight(admin, name)
            if admin.info.server_version >= 140000:
                admin.execute("SET idle_session_timeout = 0")  # the claim must outlive the wait
            stamp = f"{int(time.time())}_{secrets.token_hex(4)}"
            staging = f"{STAGING_PREFIX}{stamp}"
            # Claimed before it exists, as the verify scratch databases are.
            admin.execute("SELECT pg_advisory_lock(%s, %s)", scratch_lock_key(staging))
            drop_abandoned_scratch_databases(admin)
            admin.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(staging), sql.Identifier(name)
                )
            )
        except psycopg.Error as error:
            raise _server_error(target, "preparing the staging database", error) from None
        try:
            admin.execute(
                sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                    sql.Identifier(staging),
                    sql.Literal(f"bakup restore into {name} in progress; swapped in when it ends"),
                )
            )
            yield target.with_dbname(staging)
            _copy_properties(admin, name, staging)
            replaced = _swap(admin, name, staging, stamp, keep_replaced)
        except BaseException:
            with contextlib.suppress(psycopg.Error, OSError):
                drop_database(admin, staging)
            raise
        if keep_replaced:
            log.info(
                "The database %s held before the restore is kept as %s: drop it "
                "(DROP DATABASE %s) once the restored one is right",
                name,
                replaced,
                sql.Identifier(replaced).as_string(admin),
            )
        else:
            try:
                drop_database(admin, replaced)
            except psycopg.Error as error:  # the swap is done: only an empty copy is left
                log.warning(
                    "WARNING: could not drop the replaced empty database %s: %s", replaced, error
                )


def _swap(
    admin: psycopg.Connection[Any], name: str, staging: str, stamp: str, keep_replaced: bool
) -> str:
    """Rename the target away and the staging database to the target's name, in one
    transaction; returns the replaced database's new name. Waits SWAP_WAIT_SECONDS for
    sessions on the target to leave; raises RestoreError if they do not."""
    # An empty replaced target is dropped, and if a crash comes first the claim-free staging
    # prefix lets the next run's cleanup drop it; one with data keeps a name for the operator.
    replaced = (
        _name_for(name, "_before_restore_" + datetime.now(UTC).strftime("%Y%m%d_%H%M%S"))
        if keep_replaced
        else f"{STAGING_PREFIX}{stamp}_old"
    )
    deadline = time.monotonic() + SWAP_WAIT_SECONDS
    while True:
        try:
            with admin.transaction():
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(name), sql.Identifier(replaced)
                    )
                )
                admin.execute(
                    sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                        sql.Identifier(staging), sql.Identifier(name)
                    )
                )
            return replaced
        except psycopg.errors.ObjectInUse:
            if time.monotonic() < deadline:
                time.sleep(1.0)
                continue
        kept = _name_for(name, "_restored_" + datetime.now(UTC).strftime("%Y%m%d_%H%M%S"))
        admin.execute(
            sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
                sql.Identifier(staging), sql.Identifier(kept)
            )
        )
        raise RestoreError(
            f"the restore finished in database {kept}, but sessions stayed connected to {name} "
            f"so it could not be swapped in; {name} is as it was. Disconnect them and rename "
            f"the databases yourself, or drop {kept} and restore again",
            stage="restore",
        )


def _copy_properties(admin: psycopg.Connection[Any], source: str, copy: str) -> None:
    """Give ``copy`` the database-level properties of ``source`` that a template copy lacks:
    owner, privileges, per-database settings, connection limit and comment."""
    row = admin.execute(
        """SELECT pg_catalog.pg_get_userbyid(datdba), datacl IS NOT NULL, datconnlimit,
                  pg_catalog.shobj_description(oid, 'pg_database'), oid
           FROM pg_catalog.pg_database WHERE datname = %s""",
        (source,),
    ).fetchone()
    if row is None:
        raise RestoreError(
            f"the target database {source!r} disappeared during the restore", stage="restore"
        )
    owner, has_acl, connlimit, comment, oid = row
    target = sql.Identifier(copy)
    admin.execute(sql.SQL("ALTER DATABASE {} OWNER TO {}").format(target, sql.Identifier(owner)))
    if has_acl:
        admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(target))
        grants = admin.execute(
            """SELECT CASE WHEN a.grantee = 0 THEN NULL
                           ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
                      a.privilege_type, a.is_grantable
               FROM pg_catalog.pg_database d, aclexplode(d.datacl) a WHERE d.datname = %s""",
            (source,),
        ).fetchall()
        for grantee, privilege, grantable in grants:
            admin.execute(
                sql.SQL("GRANT {} ON DATABASE {} TO {}{}").format(
                    sql.SQL(privilege),
                    target,
                    sql.SQL("PUBLIC") if grantee is None else sql.Identifier(grantee),
                    sql.SQL(" WITH GRANT OPTION" if grantable else ""),
                )
            )
    if connlimit != -1:
        admin.execute(
            sql.SQL("ALTER DATABASE {} CONNECTION LIMIT {}").format(target, sql.Literal(connlimit))
        )
    settings = admin.execute(
        """SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(s.setrole) END,
                  unnest(s.setconfig)
           FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase = %s""",
        (oid,),
    ).fetchall()
    for role, setting in settings:
        key, _, value = str(setting).partition("=")
        # set_config parses the stored text exactly as the server stored it (lists included);
        # FROM CURRENT then records that value for the copy.
        with admin.transaction():
            admin.execute("SELECT pg_catalog.set_config(%s, %s, true)", (key, value))
            scope = (
                sql.SQL("DATABASE {}").format(target)
                if role is None
                else sql.SQL("ROLE {} IN DATABASE {}").format(sql.Identifier(role), target)
            )
            admin.execute(
                sql.SQL("ALTER {} SET {} FROM CURRENT").format(scope, sql.Identifier(key))
            )
    admin.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(target, sql.Literal(comment)))


def _server_error(target: ConnectionParams, doing: str, error: psycopg.Error) -> RestoreError:
    _stage, message = explain_failure(
        "pg_restore", str(error), 1, target.password, variable=target.variable
    )
    return RestoreError(f"{doing} on {target.display()} failed: {message}", stage="restore")
