"""Back up a rich database, drop it, restore it two ways, and compare every table."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Database, base_env, create_database, run_bakup
from tests.support.postgres_server import PostgresServer, find_server_bin
from tests.support.sample_data import load_sample_data, table_fingerprints

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sample(pg_server: PostgresServer) -> Database:
    """The sample database, built once for this module."""
    db = create_database(pg_server, "sample")
    load_sample_data(pg_server, db.name)
    return db


def only_backup(backup_dir: Path) -> tuple[Path, dict]:
    """Return the one backup file in ``backup_dir`` and its manifest."""
    manifests = sorted(backup_dir.glob("postgres_backup_*.json"))
    assert len(manifests) == 1, sorted(path.name for path in backup_dir.iterdir())
    manifest = json.loads(manifests[0].read_text())
    return backup_dir / manifest["name"], manifest


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_backup_restores_every_table_exactly_with_bakup_restore(
    sample: Database, target_database: Database, tmp_path: Path, compression: str
) -> None:
    env = base_env(DATABASE_URL=sample.url, BACKUP_DIR=str(tmp_path), COMPRESSION=compression)
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stderr
    assert "Backup completed successfully" in result.stdout

    restored = run_bakup(
        "restore", "latest", env={**env, "TARGET_DATABASE_URL": target_database.url}
    )
    assert restored.returncode == 0, restored.stderr

    server = sample.server
    assert table_fingerprints(server, target_database.name) == table_fingerprints(
        server, sample.name
    )


def test_manifest_row_counts_match_the_database_exactly(sample: Database, tmp_path: Path) -> None:
    env = base_env(DATABASE_URL=sample.url, BACKUP_DIR=str(tmp_path))
    assert run_bakup("backup", env=env).returncode == 0
    _, manifest = only_backup(tmp_path)

    counts = manifest["table_row_counts"]
    assert counts["sales.orders"] == 300000
    assert counts["sales.customers"] == 20002
    assert counts['audit log.Events "v2" table'] == 501
    assert counts["public.documents"] == 2
    assert counts["public.empty_table"] == 0
    assert manifest["server_version"].startswith(sample.psql("SHOW server_version").split()[0])
    assert manifest["pg_dump_version"]
    assert manifest["raw_size_bytes"] > manifest["size_bytes"] > 0
    assert manifest["compression"] == "gzip"


def test_original_restore_procedure_gunzip_then_pg_restore_still_works(
    sample: Database, target_database: Database, tmp_path: Path
) -> None:
    env = base_env(DATABASE_URL=sample.url, BACKUP_DIR=str(tmp_path))
    assert run_bakup("backup", env=env).returncode == 0
    stored, _ = only_backup(tmp_path)
    assert stored.name.endswith(".sql.gz")

    work = tmp_path / "manual"
    work.mkdir()
    copy = work / stored.name
    shutil.copy(stored, copy)
    subprocess.run(["gunzip", str(copy)], check=True)
    plain = work / stored.name.removesuffix(".gz")
    assert plain.read_bytes()[:5] == b"PGDMP"

    server = sample.server
    subprocess.run(
        [
            str(find_server_bin() / "pg_restore"),
            "-h",
            server.host,
            "-p",
            str(server.port),
            "-U",
            server.user,
            "-d",
            target_database.name,
            "--no-password",
            str(plain),
        ],
        check=True,
        env={**base_env(), "PGPASSWORD": server.password},
        capture_output=True,
    )
    assert table_fingerprints(server, target_database.name) == table_fingerprints(
        server, sample.name
    )


def test_gzip_backup_is_a_standard_gzip_stream_holding_a_custom_archive(
    sample: Database, tmp_path: Path
) -> None:
    env = base_env(DATABASE_URL=sample.url, BACKUP_DIR=str(tmp_path))
    assert run_bakup("backup", env=env).returncode == 0
    stored, manifest = only_backup(tmp_path)
    with gzip.open(stored) as archive:
        raw = archive.read()
    assert raw[:5] == b"PGDMP"
    assert len(raw) == manifest["raw_size_bytes"]


def test_restore_refuses_a_non_empty_target_unless_clean(
    sample: Database, target_database: Database, tmp_path: Path
) -> None:
    env = base_env(
        DATABASE_URL=sample.url, BACKUP_DIR=str(tmp_path), TARGET_DATABASE_URL=target_database.url
    )
    assert run_bakup("backup", env=env).returncode == 0
    assert run_bakup("restore", "latest", env=env).returncode == 0

    again = run_bakup("restore", "latest", env=env)
    assert again.returncode == 1
    assert "not empty" in again.stderr and "--clean" in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1

    target_database.psql("DELETE FROM sales.orders WHERE id > 10")
    cleaned = run_bakup("restore", "latest", "--clean", env=env)
    assert cleaned.returncode == 0, cleaned.stderr
    server = sample.server
    assert table_fingerprints(server, target_database.name) == table_fingerprints(
        server, sample.name
    )


def test_restore_with_target_url_option(
    sample: Database, target_database: Database, tmp_path: Path
) -> None:
    env = base_env(DATABASE_URL=sample.url, BACKUP_DIR=str(tmp_path))
    assert run_bakup("backup", env=env).returncode == 0
    stored, _ = only_backup(tmp_path)
    result = run_bakup("restore", stored.name, "--target-url", target_database.url, env=env)
    assert result.returncode == 0, result.stderr
    assert target_database.psql("SELECT count(*) FROM sales.orders") == "300000"


def test_back_up_drop_the_database_and_restore_it_under_its_own_name(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    db = create_database(pg_server, "dropped")
    load_sample_data(pg_server, db.name)
    before = table_fingerprints(pg_server, db.name)
    env = base_env(DATABASE_URL=db.url, BACKUP_DIR=str(tmp_path), TARGET_DATABASE_URL=db.url)
    assert run_bakup("backup", env=env).returncode == 0

    pg_server.psql("postgres", f'DROP DATABASE "{db.name}" WITH (FORCE)')
    pg_server.psql("postgres", f'CREATE DATABASE "{db.name}"')
    restored = run_bakup("restore", "latest", env=env)
    assert restored.returncode == 0, restored.stderr
    assert table_fingerprints(pg_server, db.name) == before
    pg_server.psql("postgres", f'DROP DATABASE "{db.name}" WITH (FORCE)')
