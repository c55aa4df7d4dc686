"""What to do about a failure: the original script's troubleshooting, brought up to date."""

from __future__ import annotations

# (words in the error, advice): the first match wins.
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
    ("does not exist", "Check the database and user names in DATABASE_URL."),
    ("timeout expired", "The server did not answer in time: check the network path and firewall."),
    (
        "command not found",
        "Install the PostgreSQL client tools (postgresql-client) or set PG_BIN_DIR.",
    ),
    (
        "version mismatch",
        "Install a pg_dump at least as new as the server and point PG_BIN_DIR at it.",
    ),
    ("port", "DATABASE_URL is malformed: fix the part the error names."),
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


def advice_for(error: str) -> str:
    """Return the advice for an error line."""
    lowered = error.lower()
    for words, advice in ADVICE:
        if words in lowered:
            return advice
    return DEFAULT
