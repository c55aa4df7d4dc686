"""Which PostgreSQL client (pg_dump, pg_restore) serves which server.

pg_dump refuses to dump a server of a newer major version than its own, and one worker may serve
a fleet of servers of several majors, so bakup finds every installed client major and picks one
per server: the oldest installed major that is not older than the server's. Why the oldest that
fits rather than the newest: a pg_dump of the server's own major matches its dump semantics most
closely (the catalog queries and the SQL in the archive are those its server's documentation
describes), and what it writes restores into that major with nothing newer. A newer pg_dump also
works (pg_dump supports older servers): it serves when the server's own major is not installed.

Where clients are found:

- ``PG_BIN_DIR``, when set, always wins and is used as-is: no search, no version read before a
  dump (pg_dump itself refuses a newer server; bakup turns that refusal into one line);
- the directories that ``PG_CLIENT_DIRS`` names (glob patterns separated by ``:``), by default
  ``/usr/lib/postgresql/*/bin`` (Debian, Ubuntu and the PostgreSQL project's apt repository) and
  ``/usr/pgsql-*/bin`` (the PostgreSQL project's RPMs);
- the ``pg_dump`` on ``PATH``, a fallback when none of those fits.

A client's major is what its ``pg_dump --version`` says, never what its directory is called.
The server's major is read once per server and process (a connection, no query: the server
announces its version when the connection starts) and kept for SERVER_MAJOR_TTL_SECONDS, so a
long-running worker notices a server upgraded under it.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bakup.dburl import ConnectionParams
from bakup.errors import DumpError, RestoreError
from bakup.pgtools import connect, diagnose, find_program, program_version

log = logging.getLogger("bakup")

DEFAULT_CLIENT_DIRS = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")
# How long a server's major version is trusted before it is read again.
SERVER_MAJOR_TTL_SECONDS = 600.0

_server_majors: dict[tuple[str, str, str], tuple[float, int]] = {}
_versions: dict[tuple[str, int, int], tuple[int, str] | None] = {}


@dataclass(frozen=True)
class Client:
    """One installed PostgreSQL client: its major version, the version its pg_dump prints
    (``PostgreSQL 15.8 (Debian 15.8-0+deb12u1)``) and the directory holding its programs."""

    major: int
    version: str
    bin_dir: Path

    def program(self, name: str) -> str:
        """Return the path of this client's program ``name`` (pg_dump, pg_restore).

        Raises DumpError when the directory lacks it (a partial install).
        """
        path = self.bin_dir / name
        if os.access(path, os.X_OK):
            return str(path)
        raise DumpError(
            f"{name} not found in {self.bin_dir}, whose pg_dump is PostgreSQL {self.major}: "
            f"reinstall postgresql-client-{self.major} or set PG_BIN_DIR",
            stage="restore" if name == "pg_restore" else "dump",
        )

    def describe(self) -> str:
        """Return ``<path of pg_dump> (<version>)``, as ``bakup check`` prints it."""
        return f"{self.bin_dir / 'pg_dump'} ({self.version})"


def client_dirs(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Return the glob patterns of the directories searched for clients: PG_CLIENT_DIRS from
    ``env`` (``os.environ`` by default), split on ``:``, else DEFAULT_CLIENT_DIRS. Raises
    nothing."""
    env = os.environ if env is None else env
    value = env.get("PG_CLIENT_DIRS", "").strip()
    if not value:
        return DEFAULT_CLIENT_DIRS
    return tuple(pattern for pattern in value.split(":") if pattern.strip())


def installed_clients(env: Mapping[str, str] | None = None) -> list[Client]:
    """Return the clients found in the directories of ``client_dirs(env)``, one per major,
    oldest first; for a major found twice, the first pattern's directory.

    A directory whose pg_dump cannot tell its version (a broken install) is left out. Raises
    nothing.
    """
    by_major: dict[int, Client] = {}
    for pattern in client_dirs(env):
        for directory in sorted(glob.glob(pattern)):
            client = read_client(Path(directory))
            if client is not None:
                by_major.setdefault(client.major, client)
    return [by_major[major] for major in sorted(by_major)]


def path_client(env: Mapping[str, str] | None = None) -> Client | None:
    """Return the client whose pg_dump is on PATH (``env``'s, ``os.environ``'s by default), or
    None when there is none or it cannot tell its version. Raises nothing."""
    env = os.environ if env is None else env
    found = shutil.which("pg_dump", path=env.get("PATH", os.defpath))
    return read_client(Path(found).parent) if found else None


def read_client(bin_dir: Path) -> Client | None:
    """Return the client in ``bin_dir`` as its pg_dump describes itself, or None when the
    directory has no pg_dump that can be run and tells its version.

    Versions are read once per file and process (a changed file is read again). Raises nothing.
    """
    pg_dump = bin_dir / "pg_dump"
    try:
        stat = pg_dump.stat()
    except OSError:
        return None
    if not os.access(pg_dump, os.X_OK):
        return None
    key = (str(pg_dump), stat.st_mtime_ns, stat.st_ino)
    if key not in _versions:
        try:
            major, text = program_version(str(pg_dump))
            _versions[key] = (major, re.sub(r"^pg_dump\s+\((PostgreSQL)\)", r"\1", text))
        except DumpError:
            _versions[key] = None
    known = _versions[key]
    return Client(known[0], known[1], bin_dir) if known else None


def choose_client(clients: Sequence[Client], server_major: int) -> Client | None:
    """Return the oldest of ``clients`` whose major is not older than ``server_major`` (see the
    module's docstring for why), or None when every one is older. Pure; raises nothing."""
    fitting = [client for client in clients if client.major >= server_major]
    return min(fitting, key=lambda client: client.major) if fitting else None


def select_client(
    server_major: int | None,
    server: str,
    *,
    program: str = "pg_dump",
    env: Mapping[str, str] | None = None,
) -> Client:
    """Return the installed client that serves a server of major ``server_major`` (None: not
    known, so the newest, which serves every older server): chosen among the installed
    clients, then PATH's pg_dump. ``server`` is how messages name the server
    (``user@host:port/db``), ``program`` the program the caller needs.

    Raises DumpError (stage dump) when no client is installed, or none is new enough: one line
    saying the server's major, the newest installed client and what to install.
    """
    clients = installed_clients(env)
    chosen = choose_client(clients, server_major or 0)
    if server_major is None and clients:
        chosen = clients[-1]
    if chosen is None:
        fallback = path_client(env)
        if fallback is not None:
            if fallback.major >= (server_major or 0):
                return fallback
            clients = sorted([*clients, fallback], key=lambda client: client.major)
    if chosen is not None:
        return chosen
    wanted = f"postgresql-client-{server_major}" if server_major else "postgresql-client"
    if not clients:
        raise DumpError(
            f"{program}: command not found: install the PostgreSQL client tools ({wanted}) "
            "or set PG_BIN_DIR",
            stage="dump",
        )
    newest = clients[-1]
    raise DumpError(
        f"no installed PostgreSQL client is new enough for {server}: the server is "
        f"{server_major}, the newest installed client is {newest.major} ({newest.bin_dir}): "
        f"install {wanted} (apt) or set PG_BIN_DIR",
        stage="dump",
    )


def server_major(database: ConnectionParams) -> int:
    """Return the major version of ``database``'s server (15 for 15.8), read through one
    connection and kept per server (host, port) for SERVER_MAJOR_TTL_SECONDS.

    Raises psycopg.Error when the server cannot be reached or refuses the login.
    """
    key = (database.host, database.port, database.params.get("hostaddr", ""))
    now = time.monotonic()
    cached = _server_majors.get(key)
    if cached is not None and now - cached[0] < SERVER_MAJOR_TTL_SECONDS:
        return cached[1]
    with connect(database) as connection:
        major = connection.info.server_version // 10000
    remember_server_major(database, major)
    return major


def remember_server_major(database: ConnectionParams, major: int) -> None:
    """Keep ``major`` as ``database``'s server major, for a caller that already connected to
    it (``bakup check``). Raises nothing."""
    key = (database.host, database.port, database.params.get("hostaddr", ""))
    _server_majors[key] = (time.monotonic(), major)


def dump_program(database: ConnectionParams, pg_bin_dir: Path | None = None) -> str:
    """Return the pg_dump that dumps ``database``: PG_BIN_DIR's (``pg_bin_dir``) as-is when
    set, else the installed client select_client picks for its server.

    Raises DumpError when no client fits (see select_client), PG_BIN_DIR lacks pg_dump, or
    the server cannot be reached (stage and transience as pg_dump's own failure would have).
    """
    if pg_bin_dir is not None:
        return find_program("pg_dump", pg_bin_dir)
    try:
        major = server_major(database)
    except psycopg.Error as error:
        failure = diagnose("pg_dump", str(error), 1, database.password, variable=database.variable)
        raise DumpError(failure.message, stage=failure.stage, transient=failure.transient) from None
    return select_client(major, database.display()).program("pg_dump")


def restore_program(
    target: ConnectionParams, pg_bin_dir: Path | None = None, archive_version: str = ""
) -> str:
    """Return the pg_restore that restores into ``target``: PG_BIN_DIR's as-is when set, else
    the oldest installed client not older than the target server's major nor than the
    pg_dump that wrote the archive (``archive_version``, ``15.8 (Debian ...)``; empty:
    unknown).

    When every installed client is older than the target server, the newest is used, with a
    warning: unlike pg_dump, pg_restore does not refuse a newer server, and restoring into a
    newer major is how databases are upgraded. Raises RestoreError when the target cannot be
    reached, DumpError when no client is installed or PG_BIN_DIR lacks pg_restore.
    """
    if pg_bin_dir is not None:
        return find_program("pg_restore", pg_bin_dir)
    try:
        major = server_major(target)
    except psycopg.Error as error:
        failure = diagnose("pg_restore", str(error), 1, target.password, variable=target.variable)
        raise RestoreError(
            f"cannot connect to the target {target.display()}: {failure.message}",
            stage="connect",
            transient=failure.transient,
        ) from None
    written_by = re.match(r"\s*(\d+)", archive_version)
    needed = max(major, int(written_by.group(1)) if written_by else 0)
    try:
        client = select_client(needed, target.display(), program="pg_restore")
    except DumpError:
        client = select_client(None, target.display(), program="pg_restore")
        log.warning(
            "WARNING: no installed PostgreSQL client is as new as %s (PostgreSQL %s): restoring "
            "with pg_restore %s; install postgresql-client-%s to match",
            target.display(),
            needed,
            client.major,
            needed,
        )
    return client.program("pg_restore")


def list_program(pg_bin_dir: Path | None = None) -> str:
    """Return the pg_restore that reads archives without a server (``pg_restore --list``):
    PG_BIN_DIR's as-is when set, else the newest installed, which reads every older archive
    format. Raises DumpError when there is none."""
    if pg_bin_dir is not None:
        return find_program("pg_restore", pg_bin_dir)
    return select_client(None, "", program="pg_restore").program("pg_restore")
