"""Deduplicated backups on a real PostgreSQL: round trip, the second day storing a fraction of
the first, encrypted round trip, chunk names that reveal nothing, and the classic export."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path

import pyrage
import pytest

from tests.conftest import Database, base_env, create_database, run_bakup, start_bakup
from tests.integration.faults import crash_then_recover, pausing_pg_bin
from tests.support.postgres_server import PostgresServer, find_server_bin
from tests.support.s3_server import S3Server
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
    latest = manifests(backup_dir)[-1]
    assert latest["name"].endswith(".sql.dedup") and latest["encrypted"] is True
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


def referenced_chunks(backup_dir: Path) -> set[str]:
    """Every chunk the indexes in ``backup_dir`` name."""
    from bakup.dedup.reader import read_index

    return {
        chunk
        for index in backup_dir.glob("postgres_backup_*.sql.dedup")
        for chunk, _ in read_index(index.read_bytes(), index.name)
    }


@pytest.fixture
def changing(sample: Database, pg_server: PostgresServer) -> Database:
    """A copy of the sample database that a test may change."""
    db = create_database(pg_server, "dedupchange")
    pg_server.psql("postgres", f'DROP DATABASE "{db.name}"')
    pg_server.psql("postgres", f'CREATE DATABASE "{db.name}" TEMPLATE "{sample.name}"')
    return db


def test_retention_deletes_old_backups_and_only_the_chunks_no_kept_backup_needs(
    changing: Database, tmp_path: Path
) -> None:
    backup_dir = tmp_path / "b"
    env = base_env(
        DATABASE_URL=changing.url,
        BACKUP_DIR=str(backup_dir),
        BACKUP_FORMAT="dedup",
        MAX_BACKUPS="2",
    )
    for day in range(3):
        changing.psql(f"DELETE FROM sales.orders WHERE id % 97 = {day}")
        made = run_bakup("backup", env=env)
        assert made.returncode == 0, made.stderr
    assert len(manifests(backup_dir)) == 2
    stored = set(chunk_files(backup_dir))
    assert stored == referenced_chunks(backup_dir)  # nothing unreferenced, nothing missing
    assert "chunks no backup references" in made.stdout
    for manifest in manifests(backup_dir):
        checked = run_bakup("verify", manifest["name"], env=env)
        assert checked.returncode == 0, checked.stdout + checked.stderr


@pytest.mark.parametrize(
    "point",
    [
        "claimed",
        "chunks-stored",
        "published",
        "completed",
        "retiring",
        "retired-data",
        "collecting",
        "collected-one",
    ],
)
def test_a_crash_at_any_step_of_a_dedup_backup_or_prune_keeps_every_kept_backup_whole(
    changing: Database, tmp_path: Path, point: str
) -> None:
    backup_dir = tmp_path / "b"
    env = base_env(
        DATABASE_URL=changing.url,
        BACKUP_DIR=str(backup_dir),
        BACKUP_FORMAT="dedup",
        MAX_BACKUPS="1",
    )
    assert run_bakup("backup", env=env).returncode == 0
    changing.psql("DELETE FROM sales.orders WHERE id % 13 = 0")
    time.sleep(1)  # the next backup gets the next second's name
    assert len(crash_then_recover(env, point)) <= 2
    # The next prune finished what the crash left: no chunk without an index naming it, no
    # collection record, no claim.
    assert set(chunk_files(backup_dir)) == referenced_chunks(backup_dir)
    assert not list((backup_dir / "chunks").glob("gc-*.json"))
    assert all(m["status"] == "complete" for m in manifests(backup_dir))


def test_a_collection_on_another_machine_collects_nothing_while_a_backup_runs(
    changing: Database, s3: S3Server, tmp_path: Path
) -> None:
    """Two machines share a bucket (their run locks are local): a prune elsewhere while a
    deduplicated backup runs collects nothing."""
    env = base_env(
        DATABASE_URL=changing.url,
        STORAGE_URL="s3://backups/shared",
        BACKUP_FORMAT="dedup",
        MAX_BACKUPS="1",
        **s3.env(),
    )
    assert run_bakup("backup", env=env).returncode == 0
    changing.psql("DELETE FROM sales.orders WHERE id % 11 = 0")
    client = s3.client()

    def chunk_keys() -> set[str]:
        found = client.list_objects_v2(Bucket="backups", Prefix="shared/chunks/")
        return {item["Key"] for item in found.get("Contents", [])}

    # Machine one: a backup paused mid-dump. Machine two: MAX_BACKUPS=0 would let every
    # chunk go, and its prune must not collect while that backup's claim is live.
    one = {
        **env,
        "TMPDIR": str(tmp_path),
        "PG_BIN_DIR": str(
            pausing_pg_bin(tmp_path / "bin", pause_after_bytes=200_000, pause_seconds=8)
        ),
    }
    (tmp_path / "other").mkdir()
    two = {**env, "TMPDIR": str(tmp_path / "other")}
    backup = start_bakup("backup", env=one)
    try:
        deadline = time.monotonic() + 60
        while not any(
            key.endswith(".json")
            and b'"running"' in client.get_object(Bucket="backups", Key=key)["Body"].read()
            for key in {
                i["Key"]
                for i in client.list_objects_v2(Bucket="backups", Prefix="shared/").get(
                    "Contents", []
                )
            }
        ):
            assert time.monotonic() < deadline and backup.poll() is None
            time.sleep(0.2)
        before = chunk_keys()
        pruned = run_bakup("prune", env=two)
        assert pruned.returncode == 0, pruned.stderr
        assert "a backup is being written" in pruned.stdout
        assert chunk_keys() >= before
        stdout, stderr = backup.communicate(timeout=120)
    finally:
        backup.kill()
        backup.wait()
    assert backup.returncode == 0, stdout + stderr
    for item in json.loads(run_bakup("list", "--json", env=env).stdout):
        checked = run_bakup("verify", item["name"], env=env)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    # A backup that finds a live collection record waits for it: test_dedup_leases.py.


def test_export_of_a_single_file_backup_to_stdout_is_its_archive(
    sample: Database, tmp_path: Path
) -> None:
    """Any backup exports: a zstd single-file backup comes out gzip-compressed on stdout,
    holding exactly the archive the stored file holds."""
    import gzip

    import zstandard

    backup_dir = tmp_path / "b"
    env = base_env(DATABASE_URL=sample.url, BACKUP_DIR=str(backup_dir), COMPRESSION="zstd")
    assert run_bakup("backup", env=env).returncode == 0
    exported = subprocess.run(
        [sys.executable, "-m", "bakup.cli", "export", "latest", "--output", "-"],
        env=env,
        capture_output=True,
        check=False,
    )
    assert exported.returncode == 0, exported.stderr
    [stored] = backup_dir.glob("postgres_backup_*.sql.zst")
    with stored.open("rb") as handle:
        archive = zstandard.ZstdDecompressor().stream_reader(handle).read()
    assert gzip.decompress(exported.stdout) == archive
    assert sample.server.password.encode() not in exported.stdout + exported.stderr
