"""Installed PostgreSQL clients of other majors, for tests on a machine that has only one.

Each fake client is a directory laid out as Debian's ``/usr/lib/postgresql/<major>/bin`` whose
pg_dump, pg_dumpall, pg_restore and psql print ``<program> (PostgreSQL) <major>.4`` for
``--version`` and otherwise run the real programs (of the test server's major). Every real run
appends the wrapper's own path and its arguments to a log, so a test sees which client bakup
chose.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.postgres_server import find_server_bin

PROGRAMS = ("pg_dump", "pg_dumpall", "pg_restore", "psql")


def fake_client(root: Path, major: int, log: Path, *, refuses_server: str | None = None) -> Path:
    """Make ``root/<major>/bin`` and return it.

    ``refuses_server`` (a server version such as ``15.8``): its pg_dump then fails as a
    pg_dump older than that server does, with the real program's wording.
    """
    bin_dir = root / str(major) / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    real = find_server_bin()
    for program in PROGRAMS:
        lines = [
            "#!/bin/bash",
            'if [ "$1" = "--version" ] || [ "$1" = "-V" ]; then',
            f'  echo "{program} (PostgreSQL) {major}.4"',
            "  exit 0",
            "fi",
            f'printf "%s %s\\n" "$0" "$*" >> {log}',
        ]
        if refuses_server and program == "pg_dump":
            lines += [
                "echo 'pg_dump: error: aborting because of server version mismatch' >&2",
                f"echo 'pg_dump: detail: server version: {refuses_server}; "
                f"pg_dump version: {major}.4' >&2",
                "exit 1",
            ]
        lines.append(f'exec {real}/{program} "$@"')
        script = bin_dir / program
        script.write_text("\n".join(lines) + "\n")
        script.chmod(0o755)
    return bin_dir


def fake_clients(root: Path, majors: list[int], log: Path) -> dict[str, str]:
    """Install fake clients of ``majors`` under ``root``; returns the environment that makes
    bakup look for clients there only (PG_CLIENT_DIRS, and a PATH without pg_dump)."""
    for major in majors:
        fake_client(root, major, log)
    no_programs = root / "no-programs"
    no_programs.mkdir(parents=True, exist_ok=True)
    return {"PG_CLIENT_DIRS": f"{root}/*/bin", "PATH": str(no_programs)}


def runs(log: Path) -> list[tuple[str, str]]:
    """Return (program path, arguments) of every real run the fake clients logged."""
    if not log.exists():
        return []
    found = []
    for line in log.read_text().splitlines():
        path, _, arguments = line.partition(" ")
        found.append((path, arguments))
    return found
