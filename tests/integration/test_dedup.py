"""Deduplicated backups on a real PostgreSQL: round trip, the second day storing a fraction of
the first, encrypted round trip, chunk names that reveal nothing, and the classic export."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pyrage
import pytest

from tests.conftest import Database, base_env, create_database, run_bakup
from tests.support.postgres_server import PostgresServer, find_server_bin
from tests.support.sample_data import load_sample_data, table_fingerprints

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sample(pg_server: PostgresServer) -> Database:
    """The sample database, built once for this module (tests that change it make a copy)."""
    db = create_database(pg_server, "dedup")
    load_sample_data(pg_server, db.name)
    return db


def manifests(backup_dir: Path) -> list[dict]:
    return [
        json.loads(path.read_text()) for path in sorted(backup_dir.glob("postgres_backup_*.json"))
    ]


def chunk_files(backup_dir: Path) -> dict[str, int]:
    return {
        path.name: path.stat().st_size
        for path in (backup_dir / "chunks").iterdir()
        if len(path.name) == 64
    }


def test_round_trip_and_the_second_day_stores_a_fraction(
    sample: Database, target_database: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    env = base_env(DATABASE_URL=sample.url, BACKUP_DIR=str(backup_dir), BACKUP_FORMAT="dedup")
    first = run_bakup("backup", env=env)
    assert first.returncode == 0, first.stderr
    [manifest] = manifests(backup_dir)
    assert manifest["name"].endswith(".sql.dedup") and manifest["backup_format"] == "dedup"
    stored_first = sum(chunk_files(backup_dir).values())
    assert manifest["dedup"]["new_bytes"] == stored_first
    assert manifest["dedup"]["chunks"] > 5

    sample.psql(
        "INSERT INTO sales.customers (name) SELECT 'day two ' || g FROM generate_series(1, 200) g"
    )
    second = run_bakup("backup", env=env)
    assert second.returncode == 0, second.stderr
    latest = manifests(backup_dir)[-1]
    # Only the chunks around the change are new.
    assert 0 < latest["dedup"]["new_bytes"] < stored_first * 0.2, latest["dedup"]
    assert latest["dedup"]["new_chunks"] < latest["dedup"]["chunks"] / 4

    restored = run_bakup(
        "restore", "latest", env={**env, "TARGET_DATABASE_URL": target_database.url}
    )
    assert restored.returncode == 0, restored.stderr
    assert table_fingerprints(sample.server, target_database.name) == table_fingerprints(
        sample.server, sample.name
    )
    verified = run_bakup("verify", "--restore", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr


def test_chunk_names_are_keyed_not_plain_hashes(sample: Database, tmp_path: Path) -> None:
    """Two destinations back up the same data: each has its own key, so the same chunk has
    different names there, and no name is the sha256 of a chunk's plaintext."""
    one, two = tmp_path / "one", tmp_path / "two"
    for folder in (one, two):
        env = base_env(DATABASE_URL=sample.url, BACKUP_DIR=str(folder), BACKUP_FORMAT="dedup")
        assert run_bakup("backup", env=env).returncode == 0
    names_one, names_two = set(chunk_files(one)), set(chunk_files(two))
    assert len(names_one) == len(names_two) > 5
    assert not names_one & names_two
    from bakup.dedup.chunks import open_chunk

    for name in list(names_one)[:5]:
        plain = open_chunk((one / "chunks" / name).read_bytes(), None, name)
        assert hashlib.sha256(plain).hexdigest() != name


def test_encrypted_round_trip(sample: Database, target_database: Database, tmp_path: Path) -> None:
    identity = pyrage.x25519.Identity.generate()
    identity_file = tmp_path / "key.txt"
    identity_file.write_text(str(identity) + "\n")
    backup_dir = tmp_path / "b"
    env = base_env(
        DATABASE_URL=sample.url,
        BACKUP_DIR=str(backup_dir),
        BACKUP_FORMAT="dedup",
        ENCRYPTION_RECIPIENTS=str(identity.to_public()),
        ENCRYPTION_IDENTITY_FILE=str(identity_file),
        TARGET_DATABASE_URL=target_database.url,
    )
    for _ in range(2):  # the second reads the chunk key back with the identity
        made = run_bakup("backup", env=env)
        assert made.returncode == 0, made.stderr
    assert (backup_dir / "chunks" / "key.age").exists()
    assert not (backup_dir / "chunks" / "key").exists()
    for name in chunk_files(backup_dir):
        assert (backup_dir / "chunks" / name).read_bytes().startswith(b"age-encryption.org/")
    assert manifests(backup_dir)[-1]["name"].endswith(".sql.dedup.age")
    restored = run_bakup("restore", "latest", "--jobs", "2", env=env)
    assert restored.returncode == 0, restored.stderr
    assert table_fingerprints(sample.server, target_database.name) == table_fingerprints(
        sample.server, sample.name
    )


def test_export_restores_with_gunzip_and_pg_restore(
    sample: Database, target_database: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    env = base_env(DATABASE_URL=sample.url, BACKUP_DIR=str(backup_dir), BACKUP_FORMAT="dedup")
    assert run_bakup("backup", env=env).returncode == 0
    exported = tmp_path / "exported.sql.gz"
    result = run_bakup("export", "latest", "--output", str(exported), env=env)
    assert result.returncode == 0, result.stderr
    subprocess.run(["gunzip", str(exported)], check=True)
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
            str(tmp_path / "exported.sql"),
        ],
        check=True,
        env={"PGPASSWORD": server.password, "PATH": "/usr/bin:/bin"},
    )
    assert table_fingerprints(server, target_database.name) == table_fingerprints(
        server, sample.name
    )
