"""A DATABASE_URL that points at PgBouncer instead of PostgreSQL: `bakup check` says so and names
the server's own port; a backup that PgBouncer refuses fails in one line saying the same. Against
a real PgBouncer (Debian's package) in front of the test server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bakup.pgtools import diagnose
from tests.conftest import Database, base_env, run_bakup
from tests.support import pgbouncer_server
from tests.support.pgbouncer_server import PgBouncer
from tests.support.postgres_server import SUPERUSER

pytestmark = pytest.mark.skipif(
    pgbouncer_server.find_pgbouncer() is None, reason="pgbouncer is not installed"
)

StartBouncer = Callable[..., PgBouncer]


@pytest.fixture
def start_bouncer(tmp_path: Path, small_db: Database) -> Iterator[StartBouncer]:
    started: list[PgBouncer] = []

    def start(**options: object) -> PgBouncer:
        folder = tmp_path / f"pgbouncer-{len(started)}"
        bouncer = pgbouncer_server.start(folder, small_db.server, **options)  # type: ignore[arg-type]
        started.append(bouncer)
        return bouncer

    yield start
    for bouncer in started:
        bouncer.stop()


def check(url: str, tmp_path: Path) -> tuple[int, str]:
    result = run_bakup(
        "check", env=base_env(DATABASE_URL=url, BACKUP_DIR=str(tmp_path / "backups"))
    )
    return result.returncode, result.stdout + result.stderr


def database_line(output: str) -> str:
    [line] = [line for line in output.splitlines() if "  database" in line]
    return line


def test_check_fails_for_pgbouncer_in_transaction_mode_and_names_the_servers_own_port(
    small_db: Database, start_bouncer: StartBouncer, tmp_path: Path
) -> None:
    bouncer = start_bouncer(pool_mode="transaction", admin_users=(SUPERUSER,))
    status, output = check(bouncer.url(small_db.name), tmp_path)
    line = database_line(output)
    assert status == 1
    assert line.startswith("FAIL")
    assert f"DATABASE_URL points at PgBouncer on port {bouncer.port} (in transaction mode)" in line
    assert f"use the database server's own port {small_db.server.port} in DATABASE_URL" in line
    assert small_db.server.password not in output


def test_check_fails_when_pgbouncer_will_not_tell_this_role_its_pool_mode(
    small_db: Database, start_bouncer: StartBouncer, tmp_path: Path
) -> None:
    bouncer = start_bouncer(pool_mode="transaction")  # the role is no admin of PgBouncer
    status, output = check(bouncer.url(small_db.name), tmp_path)
    line = database_line(output)
    assert status == 1 and line.startswith("FAIL")
    assert "PgBouncer" in line and "whose pool mode this role may not read" in line
    assert f"own port {small_db.server.port}" in line


def test_check_passes_through_pgbouncer_in_session_mode_with_a_note(
    small_db: Database, start_bouncer: StartBouncer, tmp_path: Path
) -> None:
    bouncer = start_bouncer(pool_mode="session", admin_users=(SUPERUSER,))
    _, output = check(bouncer.url(small_db.name), tmp_path)
    line = database_line(output)
    assert line.startswith("ok")
    assert f"through PgBouncer on port {bouncer.port} in session mode" in line


def test_check_says_nothing_of_poolers_for_a_direct_connection(
    small_db: Database, tmp_path: Path
) -> None:
    _, output = check(small_db.url, tmp_path)
    assert database_line(output).startswith("ok") and "PgBouncer" not in output


def test_a_backup_pgbouncer_refuses_fails_in_one_line_naming_the_servers_own_port(
    small_db: Database, start_bouncer: StartBouncer, tmp_path: Path
) -> None:
    bouncer = start_bouncer(pool_mode="transaction")
    # A startup parameter PgBouncer does not pass on (libpq's `options`, here from the URL).
    url = bouncer.url(small_db.name, "?options=-c%20statement_timeout%3D0")
    result = run_bakup(
        "backup", env=base_env(DATABASE_URL=url, BACKUP_DIR=str(tmp_path / "backups"))
    )
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "unsupported startup parameter" in line
    assert "use the database server's own port (usually 5432), not the pooler's" in line
    assert small_db.server.password not in result.stdout + result.stderr


# What pg_dump printed through PgBouncer: 1.18 here (options in the URL or PGOPTIONS); a newer
# PgBouncer (reported against another backup tool); and pg_dump 17, which prepares statements,
# dumping through transaction pooling a second time (the first dump's statements stay behind).
RECORDED = [
    (
        'pg_dump: error: connection to server at "127.0.0.1", port 6432 failed: FATAL:  '
        "unsupported startup parameter: options\n",
        "connect",
    ),
    (
        'pg_dump: error: connection to server at "10.0.0.5", port 6432 failed: FATAL:  '
        "unsupported options startup parameter: only '-c config=val' is allowed\n",
        "connect",
    ),
    (
        'pg_dump: error: query failed: ERROR:  prepared statement "dumpFunc" already exists\n'
        "pg_dump: detail: Query was: PREPARE dumpFunc(pg_catalog.oid) AS SELECT ...\n",
        "dump",
    ),
]


@pytest.mark.parametrize(("stderr", "stage"), RECORDED)
def test_pgbouncer_failures_say_to_use_the_servers_own_port(stderr: str, stage: str) -> None:
    failure = diagnose("pg_dump", stderr, 1, None, variable="SHOP_DATABASE_URL")
    assert failure.stage == stage and not failure.transient
    assert "SHOP_DATABASE_URL seems to point at a connection pooler" in failure.message
    assert "own port (usually 5432), not the pooler's (often 6432)" in failure.message
