"""Verification when things go wrong: no stray pg_restore left behind, one-line errors from the
verify server, checks without the decryption key, scratch databases owned by live runs."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pyrage
import pytest

from bakup.catalog import Backup, find_backup
from bakup.dburl import ConnectionParams, parse_database_url
from bakup.errors import BakupError, ChecksumMismatch
from bakup.storage.local import LocalStorage
from bakup.verify import (
    VerifyError,
    check_integrity,
    check_stored_checksum,
    check_without_key,
    restore_test,
)
from tests.conftest import REPO, Database, base_env, run_bakup
from tests.integration.faults import fake_pg_bin
from tests.integration.test_encryption import key_pair
from tests.support.postgres_server import find_server_bin, free_port

pytestmark = pytest.mark.integration


def child_processes(name: str) -> list[str]:
    """This process's children called ``name``, zombies included (a zombie is a child
    nobody waited for), as "pid state" strings."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited meanwhile
        comm = text[text.index("(") + 1 : text.rindex(")")]
        state, ppid = text[text.rindex(")") + 2 :].split()[:2]
        if int(ppid) == os.getpid() and comm == name:
            found.append(f"{stat.parent.name} {state}")
    return found


def backed_up(database: Database, directory: Path, **extra: str) -> tuple[LocalStorage, Backup]:
    """Back ``database`` up with the real command; returns the storage and the backup."""
    env = base_env(DATABASE_URL=database.url, BACKUP_DIR=str(directory), **extra)
    result = run_bakup("backup", env=env)
    assert result.returncode == 0, result.stderr
    storage = LocalStorage(directory)
    return storage, find_backup(storage, "latest")


def test_no_pg_restore_is_left_when_the_backup_cannot_be_decrypted(
    small_db: Database, tmp_path: Path
) -> None:
    public, _ = key_pair(tmp_path, "ops")
    storage, backup = backed_up(small_db, tmp_path / "b", ENCRYPTION_RECIPIENTS=public)
    assert child_processes("pg_restore") == []

    with pytest.raises(BakupError, match="ENCRYPTION_IDENTITY_FILE"):
        check_integrity(storage, backup, identities=None)  # no key at all
    assert child_processes("pg_restore") == []

    wrong = [pyrage.x25519.Identity.generate()]
    with pytest.raises(BakupError, match="cannot decrypt"):
        check_integrity(storage, backup, identities=wrong)
    assert child_processes("pg_restore") == []


def test_no_pg_restore_is_left_when_the_stored_file_breaks_mid_stream(
    small_db: Database, tmp_path: Path
) -> None:
    small_db.psql("INSERT INTO t SELECT g, md5(random()::text) FROM generate_series(1, 200000) g")
    storage, backup = backed_up(small_db, tmp_path / "b")
    stored = tmp_path / "b" / backup.name
    data = bytearray(stored.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = bytes(64)
    stored.write_bytes(bytes(data))

    with pytest.raises(BakupError, match="checksum mismatch"):
        check_integrity(storage, backup)
    assert child_processes("pg_restore") == []


def test_a_verify_server_that_refuses_connections_is_one_transient_line(
    small_db: Database, tmp_path: Path
) -> None:
    storage, backup = backed_up(small_db, tmp_path / "b")
    closed = f"postgresql://someone:pw-{uuid.uuid4().hex}@127.0.0.1:{free_port()}/postgres"
    env = base_env(
        DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path / "b"), VERIFY_DATABASE_URL=closed
    )
    result = run_bakup("verify", "--restore", env=env)
    assert result.returncode == 1
    [line] = result.stderr.strip().splitlines()
    assert "refused" in line.lower() and "Traceback" not in result.stderr
    assert "(VERIFY_DATABASE_URL)" in line
    assert "pw-" not in result.stdout + result.stderr

    server = parse_url(closed)
    with pytest.raises(VerifyError) as raised:
        restore_test(storage, backup, server, server_variable="VERIFY_DATABASE_URL")
    assert raised.value.transient and raised.value.stage == "verify"
    assert "VERIFY_DATABASE_URL" in raised.value.message and "pw-" not in raised.value.message


def test_a_verify_server_refusing_to_create_the_scratch_database_is_one_line(
    small_db: Database, tmp_path: Path
) -> None:
    role = f"readonly_{uuid.uuid4().hex[:8]}"
    server = small_db.server
    server.psql("postgres", f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD 'ro-secret-pw'")
    server.psql("postgres", f"ALTER ROLE {role} SET default_transaction_read_only = on")
    storage, backup = backed_up(small_db, tmp_path / "b")
    verify_url = server.url("postgres", user=role, password="ro-secret-pw")
    env = base_env(
        DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path / "b"), VERIFY_DATABASE_URL=verify_url
    )
    try:
        result = run_bakup("verify", "--restore", env=env)
        assert result.returncode == 1, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert "read-only transaction" in line and "scratch database" in line
        assert "ro-secret-pw" not in result.stdout + result.stderr

        with pytest.raises(VerifyError) as raised:
            restore_test(
                storage, backup, parse_url(verify_url), server_variable="VERIFY_DATABASE_URL"
            )
        assert not raised.value.transient
        assert "(VERIFY_DATABASE_URL)" in raised.value.message
    finally:
        server.psql("postgres", f"DROP ROLE {role}")


def parse_url(url: str) -> ConnectionParams:
    return parse_database_url(url, name="VERIFY_DATABASE_URL")


def scratch_databases(database: Database) -> list[str]:
    rows = database.server.psql(
        "postgres", "SELECT datname FROM pg_database WHERE datname LIKE 'bakup\\_verify\\_%'"
    )
    return rows.split() if rows else []


def start_verify(env: dict[str, str]) -> subprocess.Popen[str]:
    """Start ``bakup verify --restore`` in the background."""
    return subprocess.Popen(
        [sys.executable, "-m", "bakup.cli", "verify", "--restore"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )


def wait_for_scratch_database(database: Database, process: subprocess.Popen[str]) -> str:
    """Wait until ``process`` has created its scratch database; returns its name."""
    deadline = time.monotonic() + 120
    with psycopg.connect(database.server.url("postgres"), autocommit=True) as connection:
        while time.monotonic() < deadline:
            rows = connection.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'bakup\\_verify\\_%'"
            ).fetchall()
            if rows:
                return rows[0][0]
            assert process.poll() is None, process.communicate()
            time.sleep(0.01)
    raise AssertionError("no scratch database appeared")


@pytest.fixture
def sizeable_db(small_db: Database) -> Database:
    """A database whose test restore takes a second or two."""
    small_db.psql("INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 600000) g")
    return small_db


def test_a_running_verifications_scratch_database_survives_anothers_cleanup(
    sizeable_db: Database, tmp_path: Path
) -> None:
    # The first run's pg_restore waits before it starts, as a slow restore of a large file
    # does: its scratch database exists, claimed, while the second run cleans up.
    slow = fake_pg_bin(tmp_path / "bin")
    real = find_server_bin()
    (slow / "pg_restore").write_text(
        "#!/bin/bash\n"
        f'[ "$1" = --version ] && exec {real}/pg_restore --version\n'
        f'[ "$1" = --list ] && exec {real}/pg_restore "$@"\n'
        f'sleep 15\nexec {real}/pg_restore "$@"\n'
    )
    first_env = base_env(
        DATABASE_URL=sizeable_db.url, BACKUP_DIR=str(tmp_path / "first"), PG_BIN_DIR=str(slow)
    )
    second_env = base_env(DATABASE_URL=sizeable_db.url, BACKUP_DIR=str(tmp_path / "second"))
    backed_up(sizeable_db, tmp_path / "first")
    backed_up(sizeable_db, tmp_path / "second")

    first = start_verify(first_env)
    try:
        scratch = wait_for_scratch_database(sizeable_db, first)
        second = run_bakup("verify", "--restore", env=second_env)
        assert second.returncode == 0, second.stderr
        assert "Dropped bakup_verify_" not in second.stdout
        assert scratch in scratch_databases(sizeable_db)
        assert first.poll() is None  # still restoring: the test exercised a live claim
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert first.returncode == 0, out + err
    assert "row counts match" in out
    assert scratch_databases(sizeable_db) == []


def test_the_scratch_database_of_a_killed_verification_is_dropped_by_the_next(
    sizeable_db: Database, tmp_path: Path
) -> None:
    env = base_env(DATABASE_URL=sizeable_db.url, BACKUP_DIR=str(tmp_path / "b"))
    backed_up(sizeable_db, tmp_path / "b")
    first = start_verify(env)
    scratch = wait_for_scratch_database(sizeable_db, first)
    first.kill()
    first.communicate()

    result = run_bakup("verify", "--restore", env=env)
    assert result.returncode == 0, result.stderr
    assert f"Dropped {scratch}, left by an interrupted" in result.stdout
    assert scratch_databases(sizeable_db) == []


def test_a_pg_restore_that_cannot_be_run_is_one_line(small_db: Database, tmp_path: Path) -> None:
    storage, backup = backed_up(small_db, tmp_path / "b")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pg_restore").write_bytes(b"\x7fELF not really a program\n")
    (bin_dir / "pg_restore").chmod(0o755)

    with pytest.raises(VerifyError, match=r"^verifying .*: Exec format error: .*pg_restore$"):
        check_integrity(storage, backup, pg_bin_dir=bin_dir)
    env = base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(tmp_path / "b"))
    with pytest.raises(
        VerifyError, match=r"failed: cannot run .*pg_restore: Exec format error: check PG_BIN_DIR"
    ):
        restore_test(storage, backup, parse_url(small_db.url), pg_bin_dir=bin_dir)
    assert run_bakup("verify", "--restore", env=env).returncode == 0  # nothing left behind


def test_an_encrypted_backup_is_checked_without_its_key(small_db: Database, tmp_path: Path) -> None:
    public, _ = key_pair(tmp_path, "ops")
    other, _ = key_pair(tmp_path, "offsite")
    storage, backup = backed_up(
        small_db, tmp_path / "b", ENCRYPTION_RECIPIENTS=f"{public},{other}", COMPRESSION="none"
    )
    assert backup.encrypted

    checks = check_stored_checksum(storage, backup)
    assert checks[0] == "sha256 matches the manifest"
    assert "age header is well-formed (2 recipients)" in checks[1]
    result = check_without_key(storage, backup)
    assert result.level == "checksum" and "ENCRYPTION_IDENTITY_FILE" in result.notes[0]
    assert result.as_manifest()["checks"] == checks
    assert child_processes("pg_restore") == []

    stored = tmp_path / "b" / backup.name
    original = stored.read_bytes()
    stored.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ChecksumMismatch, match="checksum mismatch"):
        check_stored_checksum(storage, backup)


@pytest.mark.parametrize(
    ("damage", "phrase"),
    [
        (lambda data: b"age-encryption.org/v2" + data[21:], "does not start with"),
        (lambda data: data.replace(b"-> X25519 ", b"-> X25519  ", 1), "stanza"),
        (lambda data: data.replace(b"\n--- ", b"\n-- ", 1), "neither a recipient nor the end"),
        # Cut 5 bytes into the payload, after the 16-byte nonce: not even one chunk's tag.
        (lambda data: data[: data.index(b"\n---") + 49 + 16 + 5], "cannot hold whole chunks"),
        (lambda data: data[: data.index(b"\n---")], "no end"),
    ],
)
def test_a_malformed_age_file_whose_checksum_matches_is_reported(
    small_db: Database, tmp_path: Path, damage, phrase: str
) -> None:
    public, _ = key_pair(tmp_path, "ops")
    storage, backup = backed_up(small_db, tmp_path / "b", ENCRYPTION_RECIPIENTS=public)
    stored = tmp_path / "b" / backup.name
    damaged = damage(stored.read_bytes())
    stored.write_bytes(damaged)
    # A manifest written for the damaged bytes: only the structure check can catch it.
    recorded = dataclasses.replace(
        backup, sha256=hashlib.sha256(damaged).hexdigest(), size_bytes=len(damaged)
    )
    with pytest.raises(VerifyError, match=f"is not a well-formed age file: .*{phrase}"):
        check_stored_checksum(storage, recorded)


def test_the_claim_outlives_an_idle_session_timeout_on_the_verify_server(
    sizeable_db: Database, tmp_path: Path
) -> None:
    role = f"verifier_{uuid.uuid4().hex[:8]}"
    server = sizeable_db.server
    server.psql("postgres", f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD 'verifier-pw'")
    server.psql("postgres", f"ALTER ROLE {role} SET idle_session_timeout = '1s'")
    backed_up(sizeable_db, tmp_path / "b")
    env = base_env(
        DATABASE_URL=sizeable_db.url,
        BACKUP_DIR=str(tmp_path / "b"),
        VERIFY_DATABASE_URL=server.url("postgres", user=role, password="verifier-pw"),
    )
    try:
        first = start_verify(env)
        wait_for_scratch_database(sizeable_db, first)
        os.kill(first.pid, signal.SIGSTOP)
        time.sleep(2.5)  # the claiming session sits idle past the role's timeout
        os.kill(first.pid, signal.SIGCONT)
        out, err = first.communicate(timeout=300)
        assert first.returncode == 0, out + err
        assert scratch_databases(sizeable_db) == []
    finally:
        server.psql("postgres", f"DROP ROLE {role}")
