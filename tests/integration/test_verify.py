"""`bakup verify`: integrity and test restores against the real server, recorded in manifests."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import psycopg
import pytest

from bakup.scratch import scratch_lock_key
from tests.conftest import Database, base_env, run_bakup

pytestmark = pytest.mark.integration


@pytest.fixture
def backed_up(database: Database, tmp_path: Path) -> tuple[Database, dict[str, str]]:
    database.psql(
        "CREATE SCHEMA s; CREATE TABLE s.t AS SELECT g AS id, md5(g::text) AS v "
        "FROM generate_series(1, 5000) g; CREATE TABLE e (id int)"
    )
    env = base_env(DATABASE_URL=database.url, BACKUP_DIR=str(tmp_path / "backups"))
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stderr
    return database, env


def manifest(env: dict[str, str]) -> dict:
    [path] = Path(env["BACKUP_DIR"]).glob("*.json")
    return json.loads(path.read_text())


def scratch_databases(database: Database) -> list[str]:
    rows = database.server.psql(
        "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'bakup\\_verify\\_%'"
    )
    return rows.split() if rows else []


def test_verify_checks_integrity_and_records_it_in_the_manifest(backed_up) -> None:
    _, env = backed_up
    result = run_bakup("verify", env=env)
    assert result.returncode == 0, result.stderr
    assert "sha256 matches the manifest" in result.stdout
    assert "pg_restore --list reads its table of contents" in result.stdout
    recorded = manifest(env)
    assert recorded["verified"] is True
    assert recorded["verified_at"].endswith("Z")
    assert recorded["verification"]["level"] == "integrity"
    listing = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert listing[0]["verified"] is True
    assert "yes" in run_bakup("list", env=env).stdout


def test_verify_restore_restores_into_a_scratch_database_and_drops_it(backed_up) -> None:
    database, env = backed_up
    result = run_bakup("verify", "--restore", env=env)
    assert result.returncode == 0, result.stderr
    recorded = manifest(env)
    assert recorded["verification"]["level"] == "restore"
    assert any("row counts match" in check for check in recorded["verification"]["checks"])
    assert scratch_databases(database) == []


def test_verify_of_a_corrupted_backup_fails_and_records_the_failure(backed_up) -> None:
    _, env = backed_up
    stored = Path(env["BACKUP_DIR"]) / manifest(env)["name"]
    data = bytearray(stored.read_bytes())
    data[len(data) // 3] ^= 0xFF
    stored.write_bytes(bytes(data))

    result = run_bakup("verify", env=env)
    assert result.returncode == 1
    assert "checksum mismatch" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    recorded = manifest(env)
    assert recorded["verified"] is False
    assert "checksum mismatch" in recorded["verification"]["error"]
    assert "FAILED" in run_bakup("list", env=env).stdout


def database_without_createdb(pg_server) -> tuple[str, str]:
    """A database owned by a role that may not create databases: its name and URL."""
    role = f"limited_{uuid.uuid4().hex[:8]}"
    name = f"owned_{uuid.uuid4().hex[:8]}"
    pg_server.psql("postgres", f"CREATE ROLE {role} LOGIN PASSWORD 'limited-pw' NOCREATEDB")
    pg_server.psql("postgres", f"CREATE DATABASE {name} OWNER {role}")
    pg_server.psql(name, f"SET ROLE {role}; CREATE TABLE t AS SELECT 1 AS x")
    return name, pg_server.url(name, user=role, password="limited-pw")


def test_verify_restore_without_createdb_falls_back_to_integrity_with_one_line(
    pg_server, tmp_path: Path
) -> None:
    name, url = database_without_createdb(pg_server)
    env = base_env(DATABASE_URL=url, BACKUP_DIR=str(tmp_path / "b"))
    assert run_bakup("backup", env=env).returncode == 0

    result = run_bakup("verify", "--restore", env=env)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stdout.splitlines() if "may not create databases" in line]
    assert len(warnings) == 1 and "verified integrity only" in warnings[0]
    recorded = manifest(env)
    assert recorded["verified"] is True
    assert recorded["verification"]["level"] == "integrity"
    pg_server.psql("postgres", f"DROP DATABASE {name} WITH (FORCE)")


def test_next_verification_drops_scratch_databases_left_by_an_interrupted_one(backed_up) -> None:
    database, env = backed_up
    leftover = f"bakup_verify_{int(time.time()) - 3600}_deadbeef"
    database.server.psql("postgres", f"CREATE DATABASE {leftover}")
    claimed = f"bakup_verify_{int(time.time()) - 3600}_cafebabe"  # a live verification's
    database.server.psql("postgres", f"CREATE DATABASE {claimed}")

    with psycopg.connect(database.server.url("postgres"), autocommit=True) as owner:
        owner.execute("SELECT pg_advisory_lock(%s, %s)", scratch_lock_key(claimed))
        result = run_bakup("verify", "--restore", env=env)
    assert result.returncode == 0, result.stderr
    assert f"Dropped {leftover}, left by an interrupted test restore or restore" in (result.stdout)
    assert scratch_databases(database) == [claimed]
    database.server.psql("postgres", f"DROP DATABASE {claimed}")


def test_verify_of_an_unknown_backup_exits_2(backed_up) -> None:
    _, env = backed_up
    result = run_bakup("verify", "postgres_backup_20000101_000000.sql.gz", env=env)
    assert result.returncode == 2
    assert "no backup named" in result.stderr


def test_a_restore_test_that_is_not_possible_is_shown_and_alerted_once_not_passed_off(
    pg_server, tmp_path: Path, http
) -> None:
    name, url = database_without_createdb(pg_server)
    env = base_env(
        DATABASE_URL=url,
        BACKUP_DIR=str(tmp_path / "b"),
        VERIFY_DATABASE_URL=url,
        WEBHOOK_URL=f"{http.url}/hook",
    )
    assert run_bakup("backup", env=env).returncode == 0
    for _ in range(2):
        result = run_bakup("verify", "--restore", env=env)
        assert result.returncode == 0, result.stderr
    assert "grant CREATEDB to the role of VERIFY_DATABASE_URL" in result.stdout
    degraded = [r for r in http.requests if b"test restores are not possible" in r.body]
    assert len(degraded) == 1  # one notice per incident, not one per verification
    listing = run_bakup("list", env=env)
    assert "yes (integrity)" in listing.stdout
    summary = run_bakup("summary", env=env)
    assert "WARNING:" in summary.stdout and "not restore-tested" in summary.stdout
    assert "limited-pw" not in b"".join(r.body for r in http.requests).decode()
    pg_server.psql("postgres", f"DROP DATABASE {name} WITH (FORCE)")
