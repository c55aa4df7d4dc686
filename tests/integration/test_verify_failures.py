"""Verification when things go wrong: no stray pg_restore left behind, one-line errors from the
verify server, checks without the decryption key, scratch databases owned by live runs."""

from __future__ import annotations

import os
from pathlib import Path

import pyrage
import pytest

from bakup.catalog import Backup, find_backup
from bakup.errors import BakupError
from bakup.storage.local import LocalStorage
from bakup.verify import check_integrity
from tests.conftest import Database, base_env, run_bakup
from tests.integration.test_encryption import key_pair

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
