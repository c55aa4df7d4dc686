"""Restoring onto a cluster that lacks the backup's owner roles: explained before the target is
touched, or the roles created from the backup's globals with --roles, ownership kept."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, create_database, run_bakup
from tests.support.postgres_server import PostgresServer

pytestmark = pytest.mark.integration


@pytest.fixture
def owned(database: Database) -> Iterator[tuple[Database, str]]:
    """A database whose table and sequence belong to a role of their own."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    database.server.psql("postgres", f"CREATE ROLE {role} NOLOGIN")
    database.psql(
        "CREATE TABLE accounts (id serial PRIMARY KEY, name text);"
        "INSERT INTO accounts (name) SELECT 'n' || g FROM generate_series(1, 500) g;"
        f"ALTER TABLE accounts OWNER TO {role};"
    )
    yield database, role
    database.server.psql("postgres", f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')
    database.server.psql("postgres", f"DROP ROLE {role}")


def backed_up_with_fresh_target(
    owned: tuple[Database, str], server: PostgresServer, tmp_path: Path
) -> tuple[dict[str, str], Database, str]:
    """Back up the owned database; return the environment to restore it into a new database
    on ``server``, that database, and the owning role."""
    source, role = owned
    env = base_env(DATABASE_URL=source.url, BACKUP_DIR=str(tmp_path / "b"))
    assert run_bakup("backup", env=env).returncode == 0
    target = create_database(server, "fresh")
    env["TARGET_DATABASE_URL"] = target.url
    return env, target, role


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_missing_roles_are_named_before_the_target_is_touched_then_created_with_roles(
    owned: tuple[Database, str], second_server: PostgresServer, tmp_path: Path, jobs: str
) -> None:
    env, target, role = backed_up_with_fresh_target(owned, second_server, tmp_path)

    refused = run_bakup("restore", "latest", "--jobs", jobs, env=env)
    assert refused.returncode == 1
    assert f"roles the target server lacks: {role}" in refused.stderr
    assert "--roles" in refused.stderr and "--no-owner" in refused.stderr
    assert target.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == "0"
    assert (
        second_server.psql("postgres", f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'")
        == "0"
    )
    assert (
        second_server.psql(
            "postgres", "SELECT count(*) FROM pg_database WHERE datname LIKE 'bakup_restore_%'"
        )
        == "0"
    )

    restored = run_bakup("restore", "latest", "--roles", "--jobs", jobs, env=env)
    assert restored.returncode == 0, restored.stderr
    assert f"Created roles missing on the target: {role}" in restored.stdout
    assert target.psql("SELECT count(*) FROM accounts") == "500"
    assert target.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'accounts'") == role
    second_server.psql("postgres", f'DROP DATABASE "{target.name}" WITH (FORCE)')
    second_server.psql("postgres", f"DROP ROLE {role}")


def test_no_owner_restores_without_the_roles(
    owned: tuple[Database, str], second_server: PostgresServer, tmp_path: Path
) -> None:
    env, target, role = backed_up_with_fresh_target(owned, second_server, tmp_path)
    restored = run_bakup("restore", "latest", "--no-owner", "--jobs", "1", env=env)
    assert restored.returncode == 0, restored.stderr
    assert target.psql("SELECT count(*) FROM accounts") == "500"
    assert (
        second_server.psql("postgres", f"SELECT count(*) FROM pg_roles WHERE rolname = '{role}'")
        == "0"
    )
