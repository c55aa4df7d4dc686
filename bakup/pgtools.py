"""Finding and running PostgreSQL's client programs (pg_dump, pg_restore), safely.

Commands are built as tuples, always with ``--no-password`` so a missing password fails at once
instead of waiting on a prompt; the password travels only in the child's environment. What a
program prints on stderr is turned into one line for the operator, with the password removed.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from bakup.dburl import ConnectionParams
from bakup.errors import DumpError

# The wording of libpq and pg_dump failures -> (stage, transient, what to do). Transient ones
# may go away by themselves (the server restarts, the network comes back): worth a retry.
_HINTS: tuple[tuple[str, str, bool, str], ...] = (
    (
        "password authentication failed",
        "connect",
        False,
        "check the user and password in DATABASE_URL",
    ),
    ("no password supplied", "connect", False, "put the password in DATABASE_URL"),
    ("does not exist", "connect", False, "check the database and user names in DATABASE_URL"),
    (
        "server version mismatch",
        "dump",
        False,
        "install a pg_dump at least as new as the server's major version, or set PG_BIN_DIR",
    ),
    (
        "connection refused",
        "connect",
        True,
        "check the host and port in DATABASE_URL and that the server is running",
    ),
    ("could not translate host name", "connect", True, "check the host name in DATABASE_URL"),
    (
        "timeout expired",
        "connect",
        True,
        "check that the server is reachable from here (firewall, host)",
    ),
    ("the database system is starting up", "connect", True, "the server is starting: wait"),
    ("the database system is shutting down", "connect", True, "the server is stopping: wait"),
    ("too many connections", "connect", True, "the server has no free connection slot"),
    (
        "connection to server",
        "connect",
        True,
        "check DATABASE_URL and that the server is reachable",
    ),
    (
        "permission denied",
        "dump",
        False,
        "grant the backup role read access to every table it dumps",
    ),
)


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


def die_with_parent() -> None:
    """In a child between fork and exec: ask Linux to SIGKILL it when its parent dies, so a
    killed worker never leaves pg_dump or pg_restore running on its own."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the pipe closing still stops the child
        pass


def child_environment(database: ConnectionParams) -> dict[str, str]:
    """Return the environment for a libpq child program: ours, minus a stray PGPASSWORD, plus
    the URL's password and an application name that shows in pg_stat_activity."""
    base = {key: value for key, value in os.environ.items() if key != "PGPASSWORD"}
    base.setdefault("PGAPPNAME", "bakup")
    return database.child_env(base)


def explain_failure(
    program: str, stderr: str, returncode: int, password: str | None
) -> tuple[str, str]:
    """Turn a failed program's stderr and exit status into (stage, one-line message).

    The message is the program's first error line followed by what to do; the password, if
    the program echoed it, is replaced by ``***``.
    """
    failure = diagnose(program, stderr, returncode, password)
    return failure.stage, failure.message


def diagnose_output(
    program: str, stderr_file: BinaryIO, returncode: int, password: str | None
) -> Failure:
    """Diagnose a failed program from the file its stderr went to (see diagnose)."""
    stderr_file.seek(0)
    return diagnose(program, stderr_file.read().decode("utf-8", "replace"), returncode, password)


def diagnose(program: str, stderr: str, returncode: int, password: str | None) -> Failure:
    """Like explain_failure, and also say whether the failure is transient (a retry may help:
    a refused connection, a killed process) or permanent (a wrong password)."""
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
    lowered = detail.lower()
    for needle, hint_stage, hint_transient, advice in _HINTS:
        if needle in lowered:
            stage, hint, transient = hint_stage, advice, hint_transient
            break
    if password:
        detail = detail.replace(password, "***")
    message = f"{detail}: {hint}" if hint else detail
    return Failure(stage, " ".join(message.split()), transient)
