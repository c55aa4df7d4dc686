"""DATABASE_URL -> connection parameters, by libpq's rules, with a display form free of secrets.

libpq itself (through psycopg's conninfo functions) decides what a URL means, so bakup reads a
URL exactly as pg_dump and psql would. libpq's own parser accepts some URLs that fail only at
connect time (a port of ``abc``) and echoes the whole URL, password included, in its errors, so
this module checks the parts people get wrong first and words each error itself.

Secrets (the password, ``sslpassword`` and any other keyword libpq marks as secret) are kept
apart from the other parameters, so the connection string that goes into a program's argv
never holds one.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from psycopg import conninfo as libpq_conninfo
from psycopg import pq

from bakup.redaction import redact

SCHEMES = ("postgresql", "postgres")

# Secret keywords known to every libpq bakup supports; newer ones come from libpq itself.
KNOWN_SECRET_KEYWORDS = frozenset({"password", "sslpassword", "oauth_client_secret"})


@functools.cache
def secret_keywords() -> frozenset[str]:
    """The connection keywords whose values are secrets: those libpq itself displays as
    hidden (``dispchar`` ``*``), plus KNOWN_SECRET_KEYWORDS."""
    try:
        hidden = {
            option.keyword.decode()
            for option in pq.Conninfo.get_defaults()
            if option.dispchar and b"*" in option.dispchar
        }
    except Exception:  # libpq cannot list its options here: the known ones still apply
        hidden = set()
    return KNOWN_SECRET_KEYWORDS | hidden


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
    # Other secret keywords (sslpassword, ...): never in conninfo(), never in argv.
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    # The variable (or option) the URL came from, for advice: DATABASE_URL, --target-url, ...
    variable: str = "DATABASE_URL"

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

    @property
    def connect_timeout(self) -> int | None:
        """The URL's own ``connect_timeout`` in seconds, None when it sets none."""
        value = self.params.get("connect_timeout", "").strip()
        return int(value) if value.isdigit() else None

    def conninfo(self) -> str:
        """Return a libpq keyword/value string without any secret, safe to put in argv."""
        return libpq_conninfo.make_conninfo(**self.params)

    def connect_kwargs(self) -> dict[str, str]:
        """Return keyword arguments for ``psycopg.connect``, secrets included."""
        kwargs = {**self.params, **self.secrets}
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
        return ConnectionParams(
            {**self.params, "dbname": dbname}, self.password, self.secrets, self.variable
        )


def parse_database_url(url: str, *, name: str = "DATABASE_URL") -> ConnectionParams:
    """Parse a ``postgresql://`` or ``postgres://`` URL by libpq's rules.

    Given the URL and the name of the variable it came from (for messages and advice);
    returns its connection parameters. Raises DatabaseUrlError naming the bad part, without
    the password or any part of it.
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
    _check_credentials_encoded(url.partition("://")[2], name)
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
    secrets = {
        key: str(parsed.pop(key))
        for key in sorted(secret_keywords() & parsed.keys())
        if parsed[key] is not None
    }
    params = {key: str(value) for key, value in parsed.items() if value is not None}
    _check_host_and_port(params, name)
    if not params.get("dbname"):
        raise DatabaseUrlError(f"{name} names no database: add /dbname after the host")
    if secrets and "service" in params:
        raise DatabaseUrlError(
            f"{name} sets {', '.join(secrets)} beside service=: put {', '.join(secrets)} "
            "in the service file instead"
        )
    if any("\n" in value or "\r" in value for value in secrets.values()):
        raise DatabaseUrlError(f"{name}: {', '.join(secrets)} cannot span several lines")
    return ConnectionParams(params, password, secrets, name)


def _check_credentials_encoded(rest: str, name: str) -> None:
    """Raise DatabaseUrlError when the user:password part of a URL (``rest`` is what follows
    ``://``) holds a character that must be percent-encoded there.

    libpq and URL parsers then split the URL in the wrong place and their errors quote a
    piece of the password as a host, port or database name, so this check comes first and
    its message quotes nothing.
    """
    authority = rest.split("/", 1)[0]  # libpq ends the user:password@host part at "/"
    path = rest[len(authority) :].split("?", 1)[0]
    first_at = authority.find("@")
    if first_at >= 0 and "?" in authority[first_at:]:  # ?query=... right after the host
        authority = authority[: authority.index("?", first_at)]
    credentials, at, _host = authority.rpartition("@")
    unencoded = (
        # p@ss: a second "@"
        authority.count("@") > 1
        # Hash#Pw or pa?ss: by URL rules the user:password@host part ends there
        or (bool(at) and any(mark in credentials for mark in "#?"))
        # pa/ss: the password's tail and the host end up in the database name
        or (
            not at
            and "@" in path
            and ":" in authority
            and not re.fullmatch(r"[0-9,]*", authority.rpartition(":")[2])
        )
        # 100% or %zz: not a percent-encoded byte
        or (bool(at) and re.search(r"%(?![0-9A-Fa-f]{2})", credentials) is not None)
    )
    if unencoded:
        raise DatabaseUrlError(
            f"{name}: the password seems to contain unencoded characters (@ # / ? %): "
            "percent-encode the password"
        )


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
    """Return ``text`` without the URL's password (see bakup.redaction.redact)."""
    secrets = [password]
    match = re.match(r"[^:]+://[^:@/]*:([^@/]*)@", url)
    if match and match.group(1):
        secrets += [match.group(1), unquote(match.group(1))]
    return redact(text, secrets)


def redact_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``, for messages."""
    return _redact(url, url)
