"""`bakup check` catches a role that cannot read everything pg_dump reads, before a backup
fails on it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, run_bakup

pytestmark = pytest.mark.integration

READER_PASSWORD = "reader-pw-SECRET-5"


@pytest.fixture
def reader(small_db: Database) -> Iterator[str]:
    """A login role that may read table ``t`` and sequence ``s`` of ``small_db`` but not
    table ``hidden``; returns its name."""
    role = f"reader_{uuid.uuid4().hex[:8]}"
    server = small_db.server
    server.psql("postgres", f"CREATE ROLE {role} LOGIN PASSWORD '{READER_PASSWORD}'")
    small_db.psql(
        "CREATE TABLE hidden (id int); CREATE SEQUENCE s; "
        f"GRANT SELECT ON t TO {role}; GRANT SELECT ON SEQUENCE s TO {role}"
    )
    yield role
    small_db.psql(f"DROP OWNED BY {role}")
    server.psql("postgres", f"DROP ROLE {role}")


def test_check_fails_naming_what_the_role_cannot_read(
    small_db: Database, reader: str, tmp_path: Path
) -> None:
    url = small_db.server.url(small_db.name, user=reader, password=READER_PASSWORD)
    env = base_env(DATABASE_URL=url, BACKUP_DIR=str(tmp_path / "b"))
    result = run_bakup("check", env=env)
    assert result.returncode == 1, result.stdout
    [line] = [line for line in result.stdout.splitlines() if line.startswith("FAIL")]
    assert "public.hidden" in line and "public.t" not in line and "public.s" not in line
    assert "GRANT SELECT" in line and "pg_read_all_data" in line
    assert READER_PASSWORD not in result.stdout + result.stderr

    # What the check foresaw: the backup fails on that table.
    backup = run_bakup("backup", env=env)
    assert backup.returncode == 1 and "hidden" in backup.stderr

    # Once the role may read it, the check passes.
    small_db.psql(f"GRANT SELECT ON hidden TO {reader}")
    assert run_bakup("check", env=env).returncode == 0
