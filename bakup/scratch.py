"""Databases bakup creates for a while on a server: test restores' scratch databases and
parallel restores' staging databases, and how the ones left by a dead run are found.

Their owner holds an advisory lock keyed by the database's name from before it exists until
it is gone, on a session kept open meanwhile. A database with one of these prefixes whose lock
no session holds belongs to a run that died: any later run on that server may drop it. No
name, age or mtime is trusted on its own.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import psycopg
from psycopg import sql

log = logging.getLogger("bakup")

SCRATCH_PREFIX = "bakup_verify_"
STAGING_PREFIX = "bakup_restore_"
PREFIXES = (SCRATCH_PREFIX, STAGING_PREFIX)
# First half of the advisory lock key a scratch database's owner holds ("baku").
SCRATCH_LOCK_CLASS = 0x62616B75


def scratch_lock_key(name: str) -> tuple[int, int]:
    """Return the advisory lock key (two int4s) that the owner of scratch database ``name``
    holds: bakup's own first half, so no other application's locks are mistaken for it."""
    digest = hashlib.sha256(name.encode()).digest()
    return SCRATCH_LOCK_CLASS, int.from_bytes(digest[:4], "big", signed=True)


def drop_abandoned_scratch_databases(admin: psycopg.Connection[Any]) -> list[str]:
    """Drop the scratch and staging databases whose owner is gone: no session on the server
    holds their advisory lock. Returns their names.

    A lock held in any database of the server counts, as owners connect to whichever
    database their URL names. Raises psycopg.Error.
    """
    patterns = [prefix.replace("_", "\\_") + "%" for prefix in PREFIXES]
    rows = admin.execute(
        "SELECT datname FROM pg_catalog.pg_database WHERE datname LIKE ANY(%s) ORDER BY datname",
        (patterns,),
    ).fetchall()
    dropped = []
    for (name,) in rows:
        first, second = scratch_lock_key(name)
        # pg_locks shows the two halves of a two-int4 key as unsigned oids, objsubid 2.
        held = admin.execute(
            """SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks
                              WHERE locktype = 'advisory' AND objsubid = 2
                                AND classid = %s::bigint::oid AND objid = %s::bigint::oid)""",
            (first & 0xFFFFFFFF, second & 0xFFFFFFFF),
        ).fetchone()
        if held and held[0]:
            continue  # a live run's
        drop_database(admin, name)
        log.info("Dropped %s, left by an interrupted test restore or restore", name)
        dropped.append(name)
    return dropped


def drop_database(admin: psycopg.Connection[Any], name: str) -> None:
    """Drop database ``name`` if it exists, ending its sessions. Raises psycopg.Error."""
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
