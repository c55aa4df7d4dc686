"""A throwaway PostgreSQL server for tests, the demo and benchmarks.

PostgreSQL refuses to run as root, so when started by root the cluster belongs to an
unprivileged user (``postgres`` if it exists, otherwise one is created). The server listens on
127.0.0.1 on a free port with password (SCRAM) authentication, so wrong passwords really fail.

Usage from a shell: ``python -m tests.support.postgres_server start DIR`` prints the
superuser's URL; ``... stop DIR`` stops it.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

SUPERUSER = "bakup_admin"
DEFAULT_PASSWORD = "Zq7-p@ss:w/rd?#%&é-SECRET"


def find_server_bin() -> Path:
    """Return the directory holding initdb and pg_ctl (newest installed major first)."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(path.split("/")[4]),
        reverse=True,
    )
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    raise RuntimeError(
        "initdb not found: run scripts/install-system-packages (apt-get install postgresql)"
    )


def server_user() -> str | None:
    """Return the unprivileged user to run the server as when we are root (None otherwise)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
        return "postgres"
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "bakup-pg"], check=False)
        return "bakup-pg"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run_as(user: str | None, command: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    if user:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


@dataclass
class PostgresServer:
    """A running throwaway server."""

    base_dir: Path
    port: int
    password: str = DEFAULT_PASSWORD
    user: str = SUPERUSER
    host: str = "127.0.0.1"

    def url(
        self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None
    ) -> str:
        """Return a postgresql:// URL for ``dbname``, the password percent-encoded."""
        user = user or self.user
        secret = self.password if password is None else password
        credentials = f"{quote(user, safe='')}:{quote(secret, safe='')}"
        return f"postgresql://{credentials}@{self.host}:{self.port}/{dbname}"

    def psql(self, dbname: str, sql: str) -> str:
        """Run ``sql`` with psql as the superuser and return its unaligned output."""
        env = {**os.environ, "PGPASSWORD": self.password}
        result = subprocess.run(
            [
                str(find_server_bin() / "psql"),
                "-X",
                "-q",
                "-At",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                self.host,
                "-p",
                str(self.port),
                "-U",
                self.user,
                "-d",
                dbname,
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
            env=env,
        )
        return result.stdout.strip()

    def stop(self) -> None:
        """Stop the server immediately."""
        stop(self.base_dir)


def start(
    base_dir: Path,
    *,
    password: str = DEFAULT_PASSWORD,
    port: int | None = None,
    bin_dir: Path | None = None,
) -> PostgresServer:
    """Create a cluster in ``base_dir`` (a fresh or missing directory) and start it, with the
    server programs of ``bin_dir`` (default: the newest installed major's).

    Returns the running server. Raises RuntimeError or CalledProcessError when it cannot start.
    """
    bin_dir = bin_dir or find_server_bin()
    user = server_user()
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    data_dir = base_dir / "data"
    password_file = base_dir / "pwfile"
    password_file.write_text(password + "\n", encoding="utf-8")
    if user:
        # The unprivileged user must reach base_dir through every parent.
        shutil.chown(base_dir, user)
        shutil.chown(password_file, user)
        for parent in base_dir.parents:
            if parent.stat().st_mode & 0o001 == 0:
                os.chmod(parent, parent.stat().st_mode | 0o001)
    _run_as(
        user,
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            SUPERUSER,
            "--auth=scram-sha-256",
            f"--pwfile={password_file}",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        ],
        capture_output=True,
    )
    password_file.unlink()
    port = port or free_port()
    options = (
        f"-p {port} -k {base_dir} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=50"
    )
    _run_as(
        user,
        [
            str(bin_dir / "pg_ctl"),
            "-D",
            str(data_dir),
            "-o",
            options,
            "-l",
            str(base_dir / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        ],
        capture_output=True,
    )
    (base_dir / "port").write_text(str(port), encoding="utf-8")
    (base_dir / "bin_dir").write_text(str(bin_dir), encoding="utf-8")  # stop() uses its pg_ctl
    server = PostgresServer(base_dir, port, password)
    deadline = time.monotonic() + 30
    while True:
        try:
            server.psql("postgres", "select 1")
            return server
        except subprocess.CalledProcessError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def stop(base_dir: Path) -> None:
    """Stop the server whose cluster is in ``base_dir`` (no error if it is not running)."""
    data_dir = Path(base_dir).resolve() / "data"
    if not (data_dir / "postmaster.pid").exists():
        return
    recorded = Path(base_dir).resolve() / "bin_dir"
    bin_dir = Path(recorded.read_text()) if recorded.exists() else find_server_bin()
    subprocess.run(
        (["runuser", "-u", server_user() or "", "--"] if os.geteuid() == 0 else [])
        + [str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "-w", "stop"],
        check=False,
        capture_output=True,
    )


def main(argv: list[str]) -> int:
    """``start DIR`` prints the superuser URL; ``stop DIR`` stops the server."""
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python -m tests.support.postgres_server start|stop DIR", file=sys.stderr)
        return 2
    if argv[0] == "start":
        print(start(Path(argv[1])).url())
    else:
        stop(Path(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
