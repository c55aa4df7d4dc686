"""Finding and running PostgreSQL's client programs (pg_dump, pg_restore), safely.

Commands are built as tuples, always with ``--no-password`` so a missing password fails at once
instead of waiting on a prompt; secrets travel only in the child's environment or a private
service file, never in argv. Connections time out (PG_CONNECT_TIMEOUT) so a server that never
answers cannot hang a run. What a program prints on stderr is turned into one line for the
operator, with secrets removed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import psycopg

from bakup.dburl import ConnectionParams
from bakup.errors import DumpError
from bakup.redaction import redact

# Default limits, in seconds: how long to wait for a server to answer a connection, and for a
# table lock another session holds, before the run fails (and, if scheduled, is retried).
DEFAULT_CONNECT_TIMEOUT = 30
DEFAULT_LOCK_WAIT_TIMEOUT = 300

# The wording of libpq and pg_dump failures -> (stage, transient, what to do); the first that
# matches wins. Transient ones may go away by themselves (the server restarts, the network comes
# back, a table dropped mid-dump is simply not there next time): worth a retry. ``{variable}``
# is the variable the connection came from (DATABASE_URL, TARGET_DATABASE_URL, ...).
# A hint whose pattern ends in "@pg_dump" or "@pg_restore" applies to that program only.
_HINTS: tuple[tuple[re.Pattern[str], str | None, str, bool, str], ...] = tuple(
    (
        re.compile(pattern.partition("@")[0], re.IGNORECASE),
        pattern.partition("@")[2] or None,
        stage,
        transient,
        advice,
    )
    for pattern, stage, transient, advice in (
        # PgBouncer's own refusals, and what transaction pooling does to pg_dump's session
        # (bakup.poolers): the cure is the server's own port.
        (
            r"unsupported (?:\w+ )?startup parameter",
            "connect",
            False,
            "{variable} seems to point at a connection pooler (PgBouncer): use the database "
            "server's own port (usually 5432), not the pooler's (often 6432)",
        ),
        (
            r"prepared statement \"[^\"]*\" (?:already exists|does not exist)@pg_dump",
            "dump",
            False,
            "{variable} seems to point at a connection pooler in transaction mode (PgBouncer), "
            "where pg_dump's session is shared: use the database server's own port (usually "
            "5432), not the pooler's (often 6432)",
        ),
        (
            r"password authentication failed",
            "connect",
            False,
            "check the user and password in {variable}",
        ),
        (r"no password supplied", "connect", False, "put the password in {variable}"),
        (
            r"\bdatabase \"[^\"]*\" does not exist",
            "connect",
            False,
            "check the database name in {variable}",
        ),
        (
            r"FATAL:\s+role \"[^\"]*\" does not exist",
            "connect",
            False,
            "check the user name in {variable}",
        ),
        (
            r"\brole \"[^\"]*\" does not exist@pg_restore",
            "restore",
            False,
            "create that role on the target server, or restore with --no-owner",
        ),
        (
            r"\brelation \"[^\"]*\" does not exist|could not open relation with OID@pg_dump",
            "dump",
            True,
            "a table was dropped while pg_dump ran: the next run will retry",
        ),
        (
            r"\b(?:schema|type|function|sequence|view) \"[^\"]*\" does not exist@pg_dump",
            "dump",
            True,
            "an object was dropped while pg_dump ran: the next run will retry",
        ),
        (
            r"canceling statement due to (?:statement|lock) timeout@pg_dump",
            "dump",
            True,
            "another session held a lock for longer than PG_LOCK_WAIT_TIMEOUT; the next run "
            "will retry (find the holder in pg_locks, or raise PG_LOCK_WAIT_TIMEOUT)",
        ),
        (
            r"server version mismatch",
            "dump",
            False,
            "install the PostgreSQL client of the server's major version "
            "(postgresql-client-<major>) so bakup can choose it, or point PG_BIN_DIR at one "
            "at least as new as the server",
        ),
        (
            r"connection refused",
            "connect",
            True,
            "check the host and port in {variable} and that the server is running",
        ),
        (
            r"could not translate host name",
            "connect",
            True,
            "check the host name in {variable}",
        ),
        (
            r"timeout expired",
            "connect",
            True,
            "the server did not answer within PG_CONNECT_TIMEOUT: check that it is reachable "
            "from here (firewall, host, port in {variable})",
        ),
        (
            r"the database system is starting up",
            "connect",
            True,
            "the server is starting: wait",
        ),
        (
            r"the database system is shutting down",
            "connect",
            True,
            "the server is stopping: wait",
        ),
        (r"too many connections", "connect", True, "the server has no free connection slot"),
        (
            r"connection to server",
            "connect",
            True,
            "check {variable} and that the server is reachable",
        ),
        (
            r"permission denied",
            "dump",
            False,
            "grant the backup role read access to every table it dumps",
        ),
    )
)

# pg_dump's refusal of a newer server names both versions on a line of its own (a "detail:"
# line from 15 on, an "error:" line before): "server version: 16.4; pg_dump version: 15.8".
_VERSION_MISMATCH = re.compile(r"server version: (\d+)[^;\n]*; (\w+) version: ([^\s;]+)")

# pg_dump names the statement that failed on a "detail: Query was: ..." line.
_LOCKED_TABLE = re.compile(r"Query was: LOCK TABLE (\S+(?:, \S+)*) IN ", re.IGNORECASE)

# The name of the service a private service file defines (see child_connection).
SERVICE_NAME = "bakup"


PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Failure:
    """A failed PostgreSQL program, explained."""

    stage: str
    message: str
    transient: bool


def find_program(name: str, bin_dir: Path | None = None) -> str:
    """Return the path of a PostgreSQL client program.

    Given its name and an optional directory (PG_BIN_DIR) to prefer over PATH; raises
    DumpError with installation advice when it cannot be found.
    """
    if bin_dir is not None:
        candidate = bin_dir / name
        if os.access(candidate, os.X_OK):
            return str(candidate)
        raise DumpError(
            f"{name} not found in PG_BIN_DIR={bin_dir}: "
            "point PG_BIN_DIR at PostgreSQL's bin directory",
            stage="dump",
        )
    found = shutil.which(name)
    if found is None:
        raise DumpError(
            f"{name}: command not found: install the PostgreSQL client tools "
            "(postgresql-client) or set PG_BIN_DIR",
            stage="dump",
        )
    return found


def program_version(path: str) -> tuple[int, str]:
    """Return (major version, full version text) of a PostgreSQL program such as pg_dump.

    Raises DumpError if it cannot be run or its version cannot be read.
    """
    try:
        output = subprocess.run(
            (path, "--version"), capture_output=True, text=True, timeout=30, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError) as error:
        raise DumpError(f"cannot run {path} --version: {error}", stage="dump") from None
    match = re.search(r"\)\s+(\d+)(?:\.(\d+))?", output)
    if not match:
        raise DumpError(f"cannot read the version of {path} from {output!r}", stage="dump")
    return int(match.group(1)), output


def _find_prctl() -> Any:
    """libc's prctl, or None where there is none (not Linux)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


# Looked up once, in the parent: the child, between fork and exec, must not load anything (the
# dynamic loader's lock may have been held by another thread at the fork, such as a backup's
# lease renewal), only call what is already resolved.
_PRCTL = _find_prctl()


def die_with_parent(signum: int = signal.SIGKILL) -> None:
    """In a child (between fork and exec, or at its start): ask Linux to send it ``signum``
    when its parent dies, so a killed worker never leaves pg_dump, pg_restore or its beat
    running on its own. Where there is no prctl, the pipe closing still stops the child."""
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, signum)


def connect_timeout(database: ConnectionParams, env: Mapping[str, str] | None = None) -> int:
    """Return how many seconds a connection to ``database`` may take to be answered.

    The URL's own ``connect_timeout`` wins; then PG_CONNECT_TIMEOUT, then libpq's
    PGCONNECT_TIMEOUT, from ``env`` (``os.environ`` by default); else DEFAULT_CONNECT_TIMEOUT.
    0 means no limit (libpq's meaning). A value that is not a whole number counts as unset
    (Settings reports it as a configuration error). Raises nothing.
    """
    if database.connect_timeout is not None:
        return database.connect_timeout
    env = os.environ if env is None else env
    for name in ("PG_CONNECT_TIMEOUT", "PGCONNECT_TIMEOUT"):
        value = env.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return DEFAULT_CONNECT_TIMEOUT


def lock_wait_timeout(env: Mapping[str, str] | None = None) -> int:
    """Return PG_LOCK_WAIT_TIMEOUT from ``env`` (``os.environ`` by default): how many seconds
    pg_dump waits for a table lock before it fails (0: no limit). Raises nothing."""
    env = os.environ if env is None else env
    value = env.get("PG_LOCK_WAIT_TIMEOUT", "").strip()
    return int(value) if value.isdigit() else DEFAULT_LOCK_WAIT_TIMEOUT


def connect(database: ConnectionParams, **options: Any) -> psycopg.Connection[Any]:
    """Open a psycopg connection to ``database`` with bakup's connect timeout (see
    connect_timeout). Given extra ``psycopg.connect`` options; raises psycopg.Error."""
    kwargs: dict[str, Any] = {**database.connect_kwargs(), **options}
    kwargs.setdefault("connect_timeout", connect_timeout(database))
    return psycopg.connect(**kwargs)


def child_environment(database: ConnectionParams) -> dict[str, str]:
    """Return the environment for a libpq child program: ours, minus a stray PGPASSWORD, plus
    the URL's password, the connect timeout and an application name that shows in
    pg_stat_activity. The URL's own connect_timeout, in the connection string, still wins."""
    base = {key: value for key, value in os.environ.items() if key != "PGPASSWORD"}
    base.setdefault("PGAPPNAME", "bakup")
    base["PGCONNECT_TIMEOUT"] = str(connect_timeout(database))
    return database.child_env(base)


@dataclass(frozen=True)
class ChildConnection:
    """How a libpq child program reaches a database without a secret in its argv.

    ``conninfo`` goes in ``--dbname``; ``env`` is the child's environment; ``pass_fds`` are
    descriptors the child must inherit (a private service file holding the secrets libpq
    reads from no environment variable, such as sslpassword).
    """

    conninfo: str
    env: dict[str, str]
    pass_fds: tuple[int, ...] = ()


@contextlib.contextmanager
def child_connection(database: ConnectionParams) -> Iterator[ChildConnection]:
    """Prepare the connection of a pg_dump or pg_restore run; the service file, if one is
    needed, is gone when the block ends.

    The password travels in PGPASSWORD. Other secrets (sslpassword has no environment
    variable) go in a service file only this process and its child can read: an anonymous
    in-memory file on Linux (``/proc/self/fd/N``), elsewhere a 0600 temporary file; the
    connection string names the service. Raises OSError when that file cannot be made.
    """
    env = child_environment(database)
    if not database.secrets:
        yield ChildConnection(database.conninfo(), env)
        return
    content = "".join(f"{key}={value}\n" for key, value in database.secrets.items())
    service = f"[{SERVICE_NAME}]\n{content}".encode()
    conninfo = f"{database.conninfo()} service={SERVICE_NAME}"
    if hasattr(os, "memfd_create"):
        # Close-on-exec for every other program; pass_fds hands it to this child alone.
        descriptor = os.memfd_create("bakup-service", os.MFD_CLOEXEC)
        try:
            os.write(descriptor, service)
            env["PGSERVICEFILE"] = f"/proc/self/fd/{descriptor}"
            yield ChildConnection(conninfo, env, (descriptor,))
        finally:
            os.close(descriptor)
        return
    with tempfile.NamedTemporaryFile(prefix="bakup-service-") as handle:  # created 0600
        handle.write(service)
        handle.flush()
        env["PGSERVICEFILE"] = handle.name
        yield ChildConnection(conninfo, env)


def explain_failure(
    program: str,
    stderr: str,
    returncode: int,
    password: str | None,
    *,
    variable: str = "DATABASE_URL",
) -> tuple[str, str]:
    """Turn a failed program's stderr and exit status into (stage, one-line message).

    The message is the program's first error line followed by what to do, naming
    ``variable`` (where the connection came from); secrets are removed (see diagnose).
    """
    failure = diagnose(program, stderr, returncode, password, variable=variable)
    return failure.stage, failure.message


def diagnose_output(
    program: str,
    stderr_file: BinaryIO,
    returncode: int,
    password: str | None,
    *,
    variable: str = "DATABASE_URL",
) -> Failure:
    """Diagnose a failed program from the file its stderr went to (see diagnose)."""
    stderr_file.seek(0)
    text = stderr_file.read().decode("utf-8", "replace")
    return diagnose(program, text, returncode, password, variable=variable)


def diagnose(
    program: str,
    stderr: str,
    returncode: int,
    password: str | None,
    *,
    variable: str = "DATABASE_URL",
) -> Failure:
    """Like explain_failure, and also say whether the failure is transient (a retry may help:
    a refused connection, a killed process, a table dropped mid-dump) or permanent (a wrong
    password). Given the program, its stderr and exit status, the password and the variable
    the connection came from; returns the Failure. Raises nothing."""
    mismatch = _VERSION_MISMATCH.search(stderr)
    if mismatch and "server version mismatch" in stderr:
        server, client, version = mismatch.groups()
        return Failure(
            "dump",
            f"{client} {version} cannot dump a PostgreSQL {server} server (server version "
            f"mismatch): install postgresql-client-{server} (apt) or point PG_BIN_DIR at a "
            f"client {server} or newer",
            False,
        )
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line or "FATAL" in line] or lines
    if returncode < 0:
        detail = f"{program} was killed by signal {-returncode}"
        if errors:
            detail += f" ({errors[-1]})"
    elif errors:
        detail = errors[0]
        # libpq puts the server's reason on a following line ("DETAIL:" or a bare FATAL).
        for extra in errors[1:3]:
            if extra not in detail and ("FATAL" in extra or "DETAIL" in extra):
                detail += " " + extra
    else:
        detail = f"{program} exited with status {returncode} and printed nothing"
    stage, hint, transient = "dump", "", returncode < 0  # killed: maybe out of memory, once
    for pattern, only_for, hint_stage, hint_transient, advice in _HINTS:
        if (only_for is None or only_for == program) and pattern.search(detail):
            stage, hint, transient = hint_stage, advice.format(variable=variable), hint_transient
            break
    locked = _LOCKED_TABLE.search(stderr)
    if locked and "timeout" in detail:
        detail += f" (waiting for a lock on {locked.group(1)})"
    detail = redact(detail, [password])
    message = f"{detail}: {hint}" if hint else detail
    return Failure(stage, " ".join(message.split()), transient)
