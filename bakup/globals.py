"""Roles and other globals: captured with every backup, put back before a restore needs them.

A pg_dump archive holds one database; the roles that own its objects, their memberships and
settings, and the tablespaces live in the cluster and are dumped by ``pg_dumpall
--globals-only``. bakup runs it after each dump and keeps its output in the backup's manifest
(the ``globals`` object: gzip, then age when the backup is encrypted, then base64, with its
sha256 and sizes), so it shares the manifest's lifecycle and validation (see
docs/backup-lifecycle.md). Role password hashes are captured only into encrypted backups, and
only when the backup role may read them (a superuser); a manifest never holds one in clear.

Restoring reads it back (``load_globals``), finds the roles the target server lacks
(``missing_roles``) and creates exactly those (``create_missing_roles``), never altering a role
that exists. Tablespaces are never created: their directories belong to the target machine.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import hashlib
import logging
import re
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pyrage

from bakup import events
from bakup.catalog import Backup
from bakup.clients import select_client, server_major
from bakup.dburl import ConnectionParams
from bakup.encryption import EncryptionError
from bakup.errors import BakupError, ConfigError, DumpError, RestoreError
from bakup.pgtools import (
    child_connection,
    connect,
    diagnose,
    die_with_parent,
    find_program,
    program_version,
)
from bakup.redaction import redact

log = logging.getLogger("bakup")

GLOBALS_FORMAT = "pg_dumpall-globals/1"
COMPRESSION = "gzip"
# pg_dumpall --globals-only reads a few catalogs: minutes mean it hangs, not that it works.
TIMEOUT_SECONDS = 300
# What a role password looks like in pg_dumpall's output; never stored unencrypted.
_PASSWORD_CLAUSE = re.compile(r"\bPASSWORD\s+'", re.IGNORECASE)


# -- parsing pg_dumpall's statements ------------------------------------------------------


@dataclass(frozen=True)
class RoleDefinition:
    """One role as pg_dumpall wrote it: its name and the ALTER ROLE statements that follow
    its CREATE ROLE (attributes, password, settings), in the dump's order, less the
    attributes a new role has anyway and only a superuser may name (NOSUPERUSER,
    NOREPLICATION, NOBYPASSRLS)."""

    name: str
    alterations: tuple[str, ...] = ()

    def statements(self) -> list[str]:
        """Return the SQL that creates the role: CREATE ROLE, then its ALTER ROLEs."""
        return [f"CREATE ROLE {quote_ident(self.name)}", *self.alterations]


# Membership options by the target's major version: PG 16 added INHERIT and SET, and the
# TRUE/FALSE spelling of ADMIN.
_OPTION_WORDS = {"ADMIN", "INHERIT", "SET"}
_OPTION_VALUES = {"OPTION", "TRUE", "FALSE"}


@dataclass(frozen=True)
class Membership:
    """``GRANT role TO member [WITH options] [GRANTED BY grantor]``."""

    role: str
    member: str
    options: tuple[str, ...] = ()  # normalised: "ADMIN OPTION", "INHERIT FALSE", ...
    grantor: str | None = None

    def statement(self, server_version: int, *, with_grantor: bool = True) -> str:
        """Return the GRANT for a server of ``server_version`` (libpq's number, 160004):
        options it does not know are left out (before 16 only ADMIN OPTION exists)."""
        options = []
        for option in self.options:
            word, _, value = option.partition(" ")
            if server_version >= 160000:
                options.append(option)
            elif word == "ADMIN" and value in ("OPTION", "TRUE"):
                options.append("ADMIN OPTION")
        text = f"GRANT {quote_ident(self.role)} TO {quote_ident(self.member)}"
        if options:
            text += " WITH " + ", ".join(options)
        if with_grantor and self.grantor is not None:
            text += f" GRANTED BY {quote_ident(self.grantor)}"
        return text


@dataclass(frozen=True)
class GlobalsDump:
    """The globals of one backup: pg_dumpall's SQL and what bakup understood of it."""

    sql: str
    role_passwords: bool
    roles: dict[str, RoleDefinition] = field(default_factory=dict)
    memberships: tuple[Membership, ...] = ()
    tablespaces: tuple[str, ...] = ()

    @classmethod
    def from_sql(cls, sql: str, *, role_passwords: bool) -> GlobalsDump:
        """Parse pg_dumpall's output (see parse_globals); raises nothing."""
        roles, memberships, tablespaces = parse_globals(sql)
        return cls(sql, role_passwords, roles, tuple(memberships), tuple(tablespaces))


def quote_ident(name: str) -> str:
    """Return ``name`` as a quoted SQL identifier (always quoted: never a keyword clash)."""
    return '"' + name.replace('"', '""') + '"'


# One token of pg_dumpall's SQL. A line starting with a backslash is a psql meta-command
# (\restrict, \connect); an E'' string is the only kind where a backslash escapes a quote.
_TOKEN = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<comment>--[^\n]*)
    | (?P<meta>^\\[^\n]*)
    | (?P<ident>"(?:[^"]|"")*")
    | (?P<estring>[eE]'(?:[^'\\]|\\.|'')*')
    | (?P<string>'(?:[^']|'')*')
    | (?P<word>[^\W\d][\w$]*)
    | (?P<number>\d[\w.]*)
    | (?P<semicolon>;)
    | (?P<other>.)
    """,
    re.VERBOSE | re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class _Token:
    kind: str  # "word" (an unquoted name or keyword), "ident" (quoted), "string", ...
    text: str
    start: int = 0  # where it starts in its statement's text

    @property
    def keyword(self) -> str:
        """The upper-case keyword, empty unless this is an unquoted word."""
        return self.text.upper() if self.kind == "word" else ""

    @property
    def name(self) -> str | None:
        """The identifier it spells (unquoted words fold to lower case), None if none."""
        if self.kind == "word":
            return self.text.lower()
        if self.kind == "ident":
            return self.text[1:-1].replace('""', '"')
        return None


def split_statements(sql: str) -> Iterator[tuple[str, list[_Token]]]:
    """Yield each SQL statement of ``sql`` (without its semicolon) and its tokens, skipping
    comments and psql meta-commands. An unterminated last statement is yielded too."""
    tokens: list[_Token] = []
    start: int | None = None
    for match in _TOKEN.finditer(sql):
        kind = match.lastgroup or "other"
        if kind in ("space", "comment", "meta"):
            continue
        if kind == "semicolon":
            if start is not None:
                yield sql[start : match.start()].strip(), tokens
            tokens, start = [], None
            continue
        if start is None:
            start = match.start()
        kind = "string" if kind == "estring" else kind
        tokens.append(_Token(kind, match.group(), match.start() - start))
    if start is not None:
        yield sql[start:].strip(), tokens


def parse_globals(sql: str) -> tuple[dict[str, RoleDefinition], list[Membership], list[str]]:
    """Read the roles, memberships and tablespaces from ``pg_dumpall --globals-only`` output
    (PostgreSQL 13 to 18).

    Given the SQL; returns (roles by name, memberships in dump order, tablespace names).
    Other statements (SET, COMMENT, privileges on tablespaces or parameters, ALTER ROLE ...
    IN DATABASE) are not needed to create a role and are left out. Raises nothing: what it
    does not understand is left out too.
    """
    alterations: dict[str, list[str]] = {}
    memberships: list[Membership] = []
    tablespaces: list[str] = []
    for text, tokens in split_statements(sql):
        words = [token.keyword for token in tokens[:3]]
        if words[:2] == ["CREATE", "ROLE"] and len(tokens) >= 3:
            name = tokens[2].name
            if name is not None:
                alterations.setdefault(name, [])
        elif words[:2] == ["ALTER", "ROLE"] and len(tokens) >= 4:
            name = tokens[2].name
            # IN DATABASE settings belong to a database that may not exist; RENAME never
            # appears in a dump.
            if name is not None and tokens[3].keyword not in ("IN", "RENAME"):
                kept = _without_default_attributes(text, tokens)
                alterations.setdefault(name, [])
                if kept:
                    alterations[name].append(kept)
        elif words[:1] == ["GRANT"]:
            memberships += _parse_membership(tokens[1:])
        elif words[:2] == ["CREATE", "TABLESPACE"] and len(tokens) >= 3:
            name = tokens[2].name
            if name is not None:
                tablespaces.append(name)
    roles = {name: RoleDefinition(name, tuple(texts)) for name, texts in alterations.items()}
    return roles, memberships, tablespaces


# Attributes pg_dumpall always spells out that a new role has anyway, and that only a
# superuser may name: left out, a CREATEROLE role (a managed service's admin) can create it.
_SUPERUSER_DEFAULTS = frozenset({"NOSUPERUSER", "NOREPLICATION", "NOBYPASSRLS"})


def _without_default_attributes(text: str, tokens: list[_Token]) -> str:
    """Return ``ALTER ROLE name WITH ...`` without the attributes in _SUPERUSER_DEFAULTS
    (empty when nothing else is left); any other statement unchanged."""
    if tokens[3].keyword != "WITH":
        return text
    dropped = [token for token in tokens[4:] if token.keyword in _SUPERUSER_DEFAULTS]
    if len(dropped) == len(tokens) - 4:
        return ""
    for token in reversed(dropped):
        end = token.start + len(token.text)
        text = text[: token.start] + text[end:].removeprefix(" ")
    return text.rstrip()


def _parse_membership(tokens: list[_Token]) -> list[Membership]:
    """Parse what follows GRANT in ``GRANT a[, b] TO c[, d] [WITH ...] [GRANTED BY e]``;
    returns no membership for a privilege grant (``GRANT ... ON ...``) or anything else."""
    keywords = [token.keyword for token in tokens]
    if "ON" in keywords or "TO" not in keywords:
        return []
    to = keywords.index("TO")
    end = len(tokens)
    granted = keywords.index("GRANTED") if "GRANTED" in keywords else None
    grantor: str | None = None
    if granted is not None:
        if granted + 3 != end or keywords[granted + 1] != "BY":
            return []
        grantor = tokens[granted + 2].name
        if grantor is None:
            return []
        end = granted
    with_at = keywords.index("WITH") if "WITH" in keywords[to:end] else end
    roles = _name_list(tokens[:to])
    members = _name_list(tokens[to + 1 : with_at])
    options = _options(tokens[with_at + 1 : end]) if with_at < end else ()
    if not roles or not members or options is None:
        return []
    return [Membership(role, member, options, grantor) for role in roles for member in members]


def _name_list(tokens: list[_Token]) -> list[str]:
    """``a, "B c"`` -> ["a", "B c"]; an empty list when it is not such a list."""
    names = [token.name for token in tokens[0::2]]
    commas = tokens[1::2]
    if not tokens or len(tokens) % 2 == 0 or any(token.text != "," for token in commas):
        return []
    if any(name is None for name in names):
        return []
    return [name for name in names if name is not None]


def _options(tokens: list[_Token]) -> tuple[str, ...] | None:
    """``ADMIN OPTION, INHERIT FALSE`` -> ("ADMIN OPTION", "INHERIT FALSE"); None when
    the options are not membership options."""
    options = []
    words = [token.keyword for token in tokens if token.text != ","]
    if len(words) % 2 or not words:
        return None
    for word, value in zip(words[0::2], words[1::2], strict=True):
        if word not in _OPTION_WORDS or value not in _OPTION_VALUES:
            return None
        options.append(f"{word} {value}")
    return tuple(options)


# -- capture ------------------------------------------------------------------------------


def pg_dumpall_command(
    pg_dumpall: str, conninfo: str, dbname: str, *, role_passwords: bool
) -> tuple[str, ...]:
    """Return pg_dumpall's argv for the globals: never a password prompt, and
    ``--no-role-passwords`` unless ``role_passwords``.

    Given the program, the connection string (free of secrets, see child_connection) and the
    database to connect to (the one being backed up: the backup role may reach it, and
    perhaps no other); returns the argv.
    """
    return (
        pg_dumpall,
        "--globals-only",
        "--no-password",
        *(() if role_passwords else ("--no-role-passwords",)),
        f"--dbname={conninfo}",
        f"--database={dbname}",
    )


def may_read_passwords(database: ConnectionParams) -> bool:
    """Whether the role of ``database`` may read role passwords (it is a superuser).

    Returns False when that cannot be found out (the dump that follows then leaves them out).
    Raises nothing.
    """
    try:
        with connect(database, autocommit=True) as connection:
            row = connection.execute(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0])


def dumpall_program(database: ConnectionParams, pg_bin_dir: Path | None = None) -> str:
    """Return the pg_dumpall of the client that dumps ``database`` (see
    bakup.clients.dump_program): PG_BIN_DIR's when set, else the installed client chosen for
    its server (whose major the dump just read, so no new connection).

    Raises DumpError when there is none or the server cannot be reached.
    """
    if pg_bin_dir is not None:
        return find_program("pg_dumpall", pg_bin_dir)
    try:
        major = server_major(database)
    except psycopg.Error as error:
        failure = diagnose("pg_dumpall", str(error), 1, database.password)
        raise DumpError(failure.message, stage="globals", transient=failure.transient) from None
    client = select_client(major, database.display(), program="pg_dumpall")
    return client.program("pg_dumpall")


def dump_globals(
    database: ConnectionParams, *, pg_bin_dir: Path | None, role_passwords: bool
) -> tuple[str, bool, str]:
    """Run ``pg_dumpall --globals-only`` against the server of ``database``.

    Given the database, PG_BIN_DIR and whether to ask for role passwords (a role that may not
    read them is retried without); returns (the SQL, whether it holds passwords, pg_dumpall's
    version). Raises DumpError (one line, no secret) when pg_dumpall is missing or fails.
    """
    pg_dumpall = dumpall_program(database, pg_bin_dir)
    _major, version = program_version(pg_dumpall)
    result = _run_pg_dumpall(pg_dumpall, database, role_passwords=role_passwords)
    if result.returncode != 0 and role_passwords and "pg_authid" in result.stderr:
        role_passwords = False  # not a superuser after all (a managed service's admin role)
        result = _run_pg_dumpall(pg_dumpall, database, role_passwords=False)
    if result.returncode != 0:
        failure = diagnose(
            "pg_dumpall",
            result.stderr,
            result.returncode,
            database.password,
            variable=database.variable,
        )
        raise DumpError(f"pg_dumpall failed: {failure.message}", stage="globals")
    return result.stdout, role_passwords, version


def _run_pg_dumpall(
    pg_dumpall: str, database: ConnectionParams, *, role_passwords: bool
) -> subprocess.CompletedProcess[str]:
    try:
        with child_connection(database) as connection:
            return subprocess.run(
                pg_dumpall_command(
                    pg_dumpall, connection.conninfo, database.dbname, role_passwords=role_passwords
                ),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                timeout=TIMEOUT_SECONDS,
                # Role names and settings in UTF-8 whatever the server's encoding.
                env={**connection.env, "PGCLIENTENCODING": "UTF8"},
                pass_fds=connection.pass_fds,
                preexec_fn=die_with_parent,
            )
    except subprocess.TimeoutExpired:
        raise DumpError(
            f"pg_dumpall did not finish within {TIMEOUT_SECONDS} s", stage="globals"
        ) from None
    except OSError as error:
        raise DumpError(
            f"cannot start {pg_dumpall}: {error.strerror or error}", stage="globals"
        ) from None


def encode_globals(
    sql: str, *, role_passwords: bool, recipients: list[Any] | None, pg_dumpall_version: str
) -> dict[str, Any]:
    """Return the manifest's ``globals`` object for ``sql``: gzip, then age to ``recipients``
    when given, then base64, with the stored bytes' sha256 and size.

    Raises BakupError if ``sql`` holds a role password and there is no recipient: a
    manifest never holds a password hash in clear.
    """
    if not recipients and (role_passwords or _PASSWORD_CLAUSE.search(sql)):
        raise BakupError(
            "refusing to store role passwords in an unencrypted manifest", stage="globals"
        )
    raw = sql.encode("utf-8")
    payload = gzip.compress(raw, compresslevel=9, mtime=0)
    if recipients:
        payload = pyrage.encrypt(payload, recipients)
    return {
        "format": GLOBALS_FORMAT,
        "compression": COMPRESSION,
        "encrypted": bool(recipients),
        "role_passwords": role_passwords,
        "pg_dumpall_version": pg_dumpall_version,
        "size_bytes": len(payload),
        "raw_size_bytes": len(raw),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "data": base64.b64encode(payload).decode("ascii"),
    }


def capture_globals(
    database: ConnectionParams,
    *,
    pg_bin_dir: Path | None,
    recipients: list[Any] | None,
    label: str,
    name: str,
) -> dict[str, Any] | None:
    """Capture the globals of ``database``'s server for the backup ``name`` of the target
    ``label``: role passwords only when ``recipients`` encrypt them and the backup role may
    read them.

    Returns the manifest's ``globals`` object, or None when they could not be captured: then
    a warning is logged and a ``backup.globals_missing`` event emitted, and the backup goes
    on without them. Raises nothing but what stops the run itself (SIGTERM, Ctrl-C).
    """
    try:
        wanted = bool(recipients) and may_read_passwords(database)
        sql, with_passwords, version = dump_globals(
            database, pg_bin_dir=pg_bin_dir, role_passwords=wanted
        )
        record = encode_globals(
            sql, role_passwords=with_passwords, recipients=recipients, pg_dumpall_version=version
        )
    except BakupError as error:
        _globals_missing(label, name, error.message)
        return None
    except Exception as error:  # a bug here must not cost the backup
        message = redact(f"unexpected {type(error).__name__}: {error}", [database.password])
        log.exception("WARNING: capturing roles and globals failed: %s", message)
        _globals_missing(label, name, message, logged=True)
        return None
    log.info(
        "Roles and globals captured (%d bytes, role passwords %s)",
        record["raw_size_bytes"],
        "included" if with_passwords else "left out",
    )
    return record


def _globals_missing(label: str, name: str, message: str, *, logged: bool = False) -> None:
    if not logged:
        log.warning(
            "WARNING: roles and globals not captured (%s); the backup goes on without them",
            message,
        )
    events.emit(
        events.Event(
            events.BACKUP_GLOBALS_MISSING,
            label,
            stage="globals",
            error=f"roles and globals not captured: {message}",
            details={"name": name},
        )
    )


# -- reading back and restoring -----------------------------------------------------------


def load_globals(backup: Backup, identities: list[Any] | None) -> GlobalsDump | None:
    """Return the globals stored with ``backup``, decrypted, decompressed and parsed.

    Given the backup and the age identities (needed when its globals are encrypted); returns
    None when the backup has none (taken before bakup captured them, or their capture
    failed). Raises ConfigError when they are encrypted and no identity is given,
    EncryptionError when no identity fits, RestoreError when they are damaged.
    """
    record = backup.globals
    if record is None:
        return None
    where = f"the roles and globals of {backup.name}"
    try:
        payload = base64.b64decode(record["data"], validate=True)
        expected = record["sha256"]
    except (KeyError, TypeError, ValueError, binascii.Error):
        raise RestoreError(f"{where} are damaged: not base64", stage="restore") from None
    if hashlib.sha256(payload).hexdigest() != expected:
        raise RestoreError(
            f"{where} are damaged: their sha256 does not match the manifest", stage="restore"
        )
    if record.get("encrypted"):
        if not identities:
            raise ConfigError(
                [
                    f"{where} are encrypted: set ENCRYPTION_IDENTITY_FILE to a file holding "
                    "the backup's age secret key"
                ]
            )
        try:
            payload = pyrage.decrypt(payload, identities)
        except pyrage.DecryptError as error:
            raise EncryptionError(
                f"cannot decrypt {where}: ENCRYPTION_IDENTITY_FILE holds no key for its "
                f"recipients ({str(error).splitlines()[0][:120]})",
                stage="restore",
            ) from None
    try:
        sql = gzip.decompress(payload).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise RestoreError(f"{where} are damaged: {error}", stage="restore") from None
    return GlobalsDump.from_sql(sql, role_passwords=bool(record.get("role_passwords")))


def missing_roles(target: ConnectionParams, needed: Iterable[str]) -> list[str]:
    """Return the roles in ``needed`` that do not exist on the server of ``target``, sorted.

    Raises RestoreError (stage ``connect``) when the server cannot be asked.
    """
    wanted = set(needed)
    if not wanted:
        return []
    with (
        _target_errors(target, "reading its roles"),
        connect(target, autocommit=True) as connection,
    ):
        existing = _existing_roles(connection)
    return sorted(wanted - existing)


def create_missing_roles(
    target: ConnectionParams, dump: GlobalsDump, roles: Iterable[str]
) -> list[str]:
    """Create ``roles`` on the server of ``target`` as the backup's globals define them.

    Each gets its CREATE ROLE and ALTER ROLE statements (attributes, password when the backup
    holds it, settings), then the memberships whose member is one of them and whose role
    exists afterwards (GRANTED BY kept when the grantor exists and the server accepts it).
    Everything happens in one transaction. A role that exists by then is left exactly as it
    is, and so are its memberships. Returns the roles created, sorted. Raises RestoreError
    naming the role and the reason when one is not in the globals or cannot be created
    (nothing is created then).
    """
    wanted = sorted(set(roles))
    unknown = [name for name in wanted if name not in dump.roles]
    if unknown:
        raise RestoreError(
            f"role {unknown[0]!r} is not in the backup's roles and globals: create it on the "
            "target server by hand, or restore with --no-owner",
            stage="restore",
        )
    if not wanted:
        return []
    # One transaction: committed when the block ends, rolled back by any error.
    with _target_errors(target, "creating roles"), connect(target) as connection:
        existing = _existing_roles(connection)
        created = [name for name in wanted if name not in existing]
        for name in created:
            for statement in dump.roles[name].statements():
                _execute(connection, statement, f"cannot create role {name!r}", target)
        present = existing | set(created)
        version = connection.info.server_version
        for membership in dump.memberships:
            if membership.member in created and membership.role in present:
                _grant(connection, membership, present, version, target)
    return created


def _existing_roles(connection: psycopg.Connection[Any]) -> set[str]:
    return {row[0] for row in connection.execute("SELECT rolname FROM pg_roles").fetchall()}


def _grant(
    connection: psycopg.Connection[Any],
    membership: Membership,
    present: set[str],
    version: int,
    target: ConnectionParams,
) -> None:
    """Grant one membership; GRANTED BY is dropped when the grantor is missing or the server
    refuses it (from 16 on the grantor needs ADMIN on the role there too)."""
    doing = f"cannot grant {membership.role!r} to role {membership.member!r}"
    if membership.grantor is not None and membership.grantor in present:
        try:
            with connection.transaction():  # a savepoint: a refusal keeps what came before
                connection.execute(membership.statement(version).encode())
            return
        except psycopg.Error as error:
            log.warning(
                "WARNING: %s as granted by %r (%s): granting it as %s instead",
                doing.removeprefix("cannot "),
                membership.grantor,
                _reason(error, target),
                target.user or "the current user",
            )
    statement = membership.statement(version, with_grantor=False)
    _execute(connection, statement, doing, target)


def _execute(
    connection: psycopg.Connection[Any], statement: str, doing: str, target: ConnectionParams
) -> None:
    try:
        # Bytes: psycopg passes them as they are, and one statement only (no parameters).
        connection.execute(statement.encode())
    except psycopg.Error as error:
        raise RestoreError(f"{doing}: {_reason(error, target)}", stage="restore") from None


def _reason(error: psycopg.Error, target: ConnectionParams) -> str:
    """The server's one-line reason, without a password or a password hash."""
    diag = getattr(error, "diag", None)
    text = (diag.message_primary if diag is not None else None) or str(error)
    text = re.sub(r"(?i)(PASSWORD\s+)'[^']*'", r"\1'***'", text.splitlines()[0] if text else "")
    return redact(text, [target.password]) or type(error).__name__


@contextlib.contextmanager
def _target_errors(target: ConnectionParams, doing: str) -> Iterator[None]:
    """Turn a psycopg error while talking to ``target`` into one RestoreError line naming
    the server and the variable its URL came from, without the password."""
    try:
        yield
    except psycopg.Error as error:
        failure = diagnose(
            "psql", _reason(error, target), 1, target.password, variable=target.variable
        )
        raise RestoreError(
            f"{doing} on {target.display()} ({target.variable}) failed: {failure.message}",
            stage="connect",
            transient=failure.transient or isinstance(error, psycopg.OperationalError),
        ) from None
