"""Encryption at rest with age: round trip, `age -d` by hand, wrong keys, no plaintext stored."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pyrage
import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.support.postgres_server import find_server_bin

pytestmark = pytest.mark.integration

MARKER = "plaintext-marker-7f3a9c"


def key_pair(directory: Path, name: str) -> tuple[str, Path]:
    """A new age key: its public key, and a file holding the secret key."""
    identity = pyrage.x25519.Identity.generate()
    path = directory / f"{name}.key"
    path.write_text(f"# {name}\n{identity}\n")
    path.chmod(0o600)
    return str(identity.to_public()), path


@pytest.fixture
def secret_db(small_db: Database) -> Database:
    small_db.psql(
        f"CREATE TABLE notes AS SELECT g AS id, '{MARKER} ' || g AS body "
        "FROM generate_series(1, 500) g"
    )
    return small_db


def test_encrypted_backups_round_trip_and_hold_no_plaintext(
    secret_db: Database, target_database: Database, tmp_path: Path
) -> None:
    public, identity_file = key_pair(tmp_path, "ops")
    other_public, _ = key_pair(tmp_path, "second-recipient")
    env = base_env(
        DATABASE_URL=secret_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        COMPRESSION="none",
        ENCRYPTION_RECIPIENTS=f"{public}, {other_public}",
        ENCRYPTION_IDENTITY_FILE=str(identity_file),
        TARGET_DATABASE_URL=target_database.url,
    )
    assert run_bakup("backup", env=env).returncode == 0
    [item] = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert item["name"].endswith(".sql.age") and item["encrypted"] is True
    stored = (tmp_path / "b" / item["name"]).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1")
    assert MARKER.encode() not in stored

    verified = run_bakup("verify", "--restore", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    restored = run_bakup("restore", "latest", "--jobs", "2", env=env)
    assert restored.returncode == 0, restored.stderr
    assert "2 parallel jobs" in restored.stdout  # decrypted into the local copy
    assert (
        target_database.psql("SELECT count(*) FROM notes WHERE body LIKE 'plaintext-marker%'")
        == "500"
    )

    if shutil.which("age"):  # the standard tool decrypts it by hand
        plain = subprocess.run(
            ["age", "-d", "-i", str(identity_file), str(tmp_path / "b" / item["name"])],
            capture_output=True,
            check=True,
        ).stdout
        listing = subprocess.run(
            [str(find_server_bin() / "pg_restore"), "--list"],
            input=plain,
            capture_output=True,
            check=True,
        ).stdout
        assert b"TABLE DATA public notes" in listing


def test_a_wrong_or_missing_identity_is_one_clear_line(
    secret_db: Database, target_database: Database, tmp_path: Path
) -> None:
    public, _ = key_pair(tmp_path, "ops")
    _, wrong_identity = key_pair(tmp_path, "someone-else")
    env = base_env(
        DATABASE_URL=secret_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        ENCRYPTION_RECIPIENTS=public,
        TARGET_DATABASE_URL=target_database.url,
    )
    assert run_bakup("backup", env=env).returncode == 0

    missing = run_bakup("restore", "latest", env=env)
    assert missing.returncode == 2
    assert "ENCRYPTION_IDENTITY_FILE" in missing.stderr

    wrong = run_bakup(
        "restore", "latest", env={**env, "ENCRYPTION_IDENTITY_FILE": str(wrong_identity)}
    )
    assert wrong.returncode == 1
    [line] = wrong.stderr.strip().splitlines()
    assert "cannot decrypt" in line and "ENCRYPTION_IDENTITY_FILE" in line
    assert (
        target_database.psql(
            "SELECT count(*) FROM pg_class WHERE relnamespace = 'public'::regnamespace"
        )
        == "0"
    )


def test_a_malformed_recipient_is_a_configuration_error(small_db: Database, tmp_path: Path) -> None:
    env = base_env(
        DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path), ENCRYPTION_RECIPIENTS="age1notakey"
    )
    result = run_bakup("backup", env=env)
    assert result.returncode == 2 and "ENCRYPTION_RECIPIENTS" in result.stderr


def test_verify_without_the_key_on_this_machine_checks_the_stored_bytes_and_says_so(
    secret_db: Database, tmp_path: Path
) -> None:
    public, _ = key_pair(tmp_path, "ops")  # the secret key stays elsewhere, as advised
    env = base_env(
        DATABASE_URL=secret_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        ENCRYPTION_RECIPIENTS=public,
    )
    assert run_bakup("backup", env=env).returncode == 0
    verified = run_bakup("verify", "--restore", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "WARNING: the decryption key is not on this machine" in verified.stdout
    [item] = json.loads(run_bakup("list", "--json", env=env).stdout)
    assert item["verified"] is True and item["verification"]["level"] == "checksum"

    (tmp_path / "b" / item["name"]).write_bytes(b"age-encryption.org/v1\n-> X25519 broken\n")
    broken = run_bakup("verify", env=env)
    assert broken.returncode == 1 and "checksum mismatch" in broken.stderr
