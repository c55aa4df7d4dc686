"""DATABASE_URL -> connection parameters, by libpq's rules, with a display form free of secrets.

libpq itself (through psycopg's conninfo functions) decides what a URL means, so bakup reads a
URL exactly as pg_dump and psql would. libpq's own parser accepts some URLs that fail only at
connect time (a port of ``abc``) and echoes the whole URL, password included, in its errors, so
this module checks the parts people get wrong first and words each error itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from psycopg import conninfo as libpq_conninfo

SCHEMES = ("postgresql", "postgres")


class DatabaseUrlError(ValueError):
    """The URL is malformed; the message names the bad part and never contains the password."""


@dataclass(frozen=True)
class ConnectionParams:
    """A parsed database URL.

    ``params`` holds libpq keywords (host, port, user, dbname, sslmode, ...) without the
    password, which is kept apart in ``password`` so it can travel only through a child
    process's environment.
    """

    params: dict[str, str]
    password: str | None = field(default=None, repr=False)

    @property
    def dbname(self) -> str:
        """The database name (libpq's default is the user name)."""
        return self.params.get("dbname") or self.params.get("user") or ""

    @property
    def host(self) -> str:
        """The host (or comma-separated hosts), ``localhost`` when the URL gave none."""
        return self.params.get("host") or "localhost"

    @property
    def port(self) -> str:
        """The port (or comma-separated ports), ``5432`` when the URL gave none."""
        return self.params.get("port") or "5432"

    @property
    def user(self) -> str:
        """The role name, empty when the URL gave none."""
        return self.params.get("user", "")

    def conninfo(self) -> str:
        """Return a libpq keyword/value string without the password, safe to put in argv."""
        return libpq_conninfo.make_conninfo(**self.params)

    def connect_kwargs(self) -> dict[str, str]:
        """Return keyword arguments for ``psycopg.connect``, password included."""
        kwargs = dict(self.params)
        if self.password is not None:
            kwargs["password"] = self.password
        return kwargs

    def child_env(self, base: dict[str, str]) -> dict[str, str]:
        """Return ``base`` plus what a libpq program needs to log in without a prompt.

        The password goes in PGPASSWORD, which only the child (and root) can read, never argv.
        """
        env = dict(base)
        if self.password is not None:
            env["PGPASSWORD"] = self.password
        return env

    def display(self) -> str:
        """Return ``user@host:port/dbname``, the form used in logs and messages."""
        host = self.host
        if ":" in host and "," not in host:
            host = f"[{host}]"
        user = f"{self.user}@" if self.user else ""
        return f"{user}{host}:{self.port}/{self.dbname}"

    def with_dbname(self, dbname: str) -> ConnectionParams:
        """Return the same connection aimed at another database on the same server."""
        return ConnectionParams({**self.params, "dbname": dbname}, self.password)


def parse_database_url(url: str, *, name: str = "DATABASE_URL") -> ConnectionParams:
    """Parse a ``postgresql://`` or ``postgres://`` URL by libpq's rules.

    Given the URL and the name of the variable it came from (for messages); returns its
    connection parameters. Raises DatabaseUrlError naming the bad part, without the password.
    """
    url = url.strip()
    if not url:
        raise DatabaseUrlError(
            f"{name} is empty: set it to postgresql://user:password@host:5432/dbname"
        )
    scheme, sep, _ = url.partition("://")
    if not sep:
        raise DatabaseUrlError(
            f"{name} is not a URL: expected postgresql://user:password@host:5432/dbname"
        )
    if scheme.lower() not in SCHEMES:
        raise DatabaseUrlError(
            f"{name} has unknown scheme {scheme!r}: use postgresql:// or postgres://"
        )
    try:
        parts = urlsplit(url)
        netloc_password = parts.password
    except ValueError as error:  # e.g. an unbalanced [ in an IPv6 host
        raise DatabaseUrlError(f"{name}: {_redact(str(error), url)}") from None
    password = unquote(netloc_password) if netloc_password is not None else None
    try:
        parsed = libpq_conninfo.conninfo_to_dict(url)
    except Exception as error:  # libpq's message may quote the whole URL
        detail = _redact(str(error).strip(), url, password)
        raise DatabaseUrlError(f"{name} is malformed: {detail}") from None
    parsed_password = parsed.pop("password", None)
    if parsed_password is not None:
        password = str(parsed_password)
    params = {key: str(value) for key, value in parsed.items() if value is not None}
    _check_host_and_port(params, name)
    if not params.get("dbname"):
        raise DatabaseUrlError(f"{name} names no database: add /dbname after the host")
    return ConnectionParams(params, password)


def _check_host_and_port(params: dict[str, str], name: str) -> None:
    """Raise DatabaseUrlError unless there is a host and every port is a number in range."""
    hosts = params.get("host", "") or params.get("hostaddr", "")
    if not hosts or any(not host for host in hosts.split(",")):
        raise DatabaseUrlError(
            f"{name} has no host: write postgresql://user:password@HOST:5432/dbname"
        )
    for port in (params.get("port") or "").split(","):
        if port == "":  # an empty entry in a host list means libpq's default port
            continue
        if not re.fullmatch(r"[0-9]+", port):
            raise DatabaseUrlError(
                f"{name} has an invalid port {port!r}: the port must be a number such as 5432"
            )
        if not 1 <= int(port) <= 65535:
            raise DatabaseUrlError(f"{name} has port {port}, outside 1-65535")


def _redact(text: str, url: str, password: str | None = None) -> str:
    """Return ``text`` with the URL's password (raw and percent-encoded) replaced by ``***``."""
    secrets: set[str] = set()
    if password:
        secrets.add(password)
    match = re.match(r"[^:]+://[^:@/]*:([^@/]*)@", url)
    if match and match.group(1):
        secrets.add(match.group(1))
        secrets.add(unquote(match.group(1)))
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def redact_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``, for messages."""
    return _redact(url, url)
