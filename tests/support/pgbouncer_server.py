"""A throwaway PgBouncer in front of a test PostgreSQL server, run as the same unprivileged
user as the server when started by root (Debian's ``pgbouncer`` package)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from tests.support.postgres_server import PostgresServer, free_port, server_user


def find_pgbouncer() -> str | None:
    """The pgbouncer program, or None when it is not installed."""
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )


@dataclass
class PgBouncer:
    """A running PgBouncer and the server behind it."""

    base_dir: Path
    port: int
    server: PostgresServer

    def url(self, dbname: str, query: str = "") -> str:
        """The server's superuser URL for ``dbname``, through the pooler."""
        credentials = f"{quote(self.server.user, safe='')}:{quote(self.server.password, safe='')}"
        return f"postgresql://{credentials}@127.0.0.1:{self.port}/{dbname}{query}"

    def stop(self) -> None:
        """Stop it (SIGTERM to the pid in its pid file) and wait until it is gone."""
        pid_file = self.base_dir / "pgbouncer.pid"
        try:
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGTERM)
        except (OSError, ValueError):
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)


def start(
    base_dir: Path,
    server: PostgresServer,
    *,
    pool_mode: str = "transaction",
    admin_users: tuple[str, ...] = (),
) -> PgBouncer:
    """Start PgBouncer (a daemon with its pid file in ``base_dir``) on a free port, passing
    every database to ``server``. Raises RuntimeError when it does not come up."""
    program = find_pgbouncer()
    if program is None:
        raise RuntimeError("pgbouncer is not installed: apt-get install pgbouncer")
    base_dir = Path(base_dir).resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    password = server.password.replace('"', '""')
    (base_dir / "userlist.txt").write_text(f'"{server.user}" "{password}"\n', encoding="utf-8")
    (base_dir / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={server.host} port={server.port}\n\n"
        "[pgbouncer]\n"
        "listen_addr = 127.0.0.1\n"
        f"listen_port = {port}\n"
        "unix_socket_dir =\n"
        "auth_type = scram-sha-256\n"
        f"auth_file = {base_dir / 'userlist.txt'}\n"
        f"pool_mode = {pool_mode}\n"
        f"admin_users = {','.join(admin_users)}\n"
        f"logfile = {base_dir / 'pgbouncer.log'}\n"
        f"pidfile = {base_dir / 'pgbouncer.pid'}\n",
        encoding="utf-8",
    )
    user = server_user()
    command = [program, "-d", str(base_dir / "pgbouncer.ini")]
    if user:
        shutil.chown(base_dir, user)
        for name in ("userlist.txt", "pgbouncer.ini"):
            shutil.chown(base_dir / name, user)
        for parent in base_dir.parents:  # the unprivileged user must reach base_dir
            if parent.stat().st_mode & 0o001 == 0:
                os.chmod(parent, parent.stat().st_mode | 0o001)
        command = ["runuser", "-u", user, "--", *command]
    subprocess.run(command, check=True, capture_output=True)
    bouncer = PgBouncer(base_dir, port, server)
    deadline = time.monotonic() + 15
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return bouncer
        except OSError:
            if time.monotonic() > deadline:
                log = base_dir / "pgbouncer.log"
                raise RuntimeError(
                    f"pgbouncer did not start: {log.read_text() if log.exists() else ''}"
                ) from None
            time.sleep(0.05)
