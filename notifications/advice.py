"""What to do about a failure: the original script's troubleshooting, brought up to date."""

from __future__ import annotations

import re

# (pattern of words in the error, advice): the first match wins. Patterns match whole words,
# so "port" never matches "unsupported", "import", "transport" or "reported".
ADVICE: tuple[tuple[str, str], ...] = (
    (
        "connection refused",
        "Check DATABASE_URL (host and port) and that PostgreSQL is running and reachable.",
    ),
    ("could not translate host name", "The host name in DATABASE_URL does not resolve: check it."),
    (
        "password authentication failed",
        "Check the user and password in DATABASE_URL; percent-encode @ : / ? # % in it.",
    ),
    (
        r"\b(?:database|role) \"[^\"]*\" does not exist",
        "Check the database and user names in DATABASE_URL.",
    ),
    (
        r"\brelation \"[^\"]*\" does not exist|could not open relation with OID",
        "A table was dropped while pg_dump ran; the next run will retry.",
    ),
    (
        r"timeout expired",
        "The server did not answer within PG_CONNECT_TIMEOUT: check the network path and firewall.",
    ),
    (
        r"canceling statement due to (?:statement|lock) timeout",
        "A session held a table locked longer than PG_LOCK_WAIT_TIMEOUT; the next run will retry.",
    ),
    (
        "command not found",
        "Install the PostgreSQL client of the server's major (postgresql-client-<major>); "
        "bakup picks it by itself. Or set PG_BIN_DIR.",
    ),
    (
        r"version mismatch|no installed PostgreSQL client is new enough",
        "Install the PostgreSQL client of the server's major (postgresql-client-<major>, from "
        "apt.postgresql.org for the newest): bakup picks the oldest installed client that is "
        "not older than the server. If PG_BIN_DIR is set, it wins: point it at that client or "
        "unset it. `bakup check` says which client serves each database.",
    ),
    (
        r"\binvalid port\b|\bport \d+, outside\b|\bis malformed\b|\bunencoded characters\b",
        "DATABASE_URL is malformed: fix the part the error names.",
    ),
    ("not writable", "Fix the permissions of BACKUP_DIR or point it elsewhere."),
    (
        "no space left",
        "Free space where the backups are stored, or move BACKUP_DIR; nothing partial was kept.",
    ),
    (
        "killed by signal",
        "pg_dump was killed (out of memory or a time limit); nothing partial was kept.",
    ),
    (
        "checksum mismatch",
        "The stored file is corrupted: keep the older backups and check the storage.",
    ),
    (
        "row counts differ",
        "The test restore does not match the backup: take a new backup and verify it.",
    ),
    ("permission denied", "Grant the backup role read access to every table it dumps."),
)
DEFAULT = "Run `bakup check` on the worker's machine; it says what to fix, one line per check."


_COMPILED = tuple(
    (re.compile(rf"(?<!\w)(?:{pattern})(?!\w)", re.IGNORECASE), advice)
    for pattern, advice in ADVICE
)


def advice_for(error: str) -> str:
    """Return the advice for an error line: the first entry of ADVICE whose words it holds
    as whole words, else DEFAULT."""
    for pattern, advice in _COMPILED:
        if pattern.search(error):
            return advice
    return DEFAULT
