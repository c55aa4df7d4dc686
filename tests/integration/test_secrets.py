"""The database password never appears in argv, output, logs, manifests or error text."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.integration.faults import fake_pg_bin

pytestmark = pytest.mark.integration


def secret_forms(password: str) -> list[str]:
    """The password as typed and as it appears percent-encoded in a URL."""
    return [password, quote(password, safe=""), "SECRET"]


def test_password_appears_nowhere_across_backup_restore_check_and_failures(
    database: Database, target_database: Database, tmp_path: Path
) -> None:
    database.psql("CREATE TABLE t AS SELECT g FROM generate_series(1, 100) g")
    password = database.server.password
    assert "SECRET" in password
    backup_dir = tmp_path / "backups"
    bin_dir = fake_pg_bin(tmp_path / "bin")
    env = base_env(
        DATABASE_URL=database.url,
        BACKUP_DIR=str(backup_dir),
        PG_BIN_DIR=str(bin_dir),
        TARGET_DATABASE_URL=target_database.url,
    )
    wrong_db = database.server.url("no_such_database")
    runs = [
        run_bakup("backup", env=env),
        run_bakup("list", env=env),
        run_bakup("list", "--json", env=env),
        run_bakup("check", env=env),
        run_bakup("restore", "latest", env=env),
        run_bakup("restore", "latest", env=env),  # refused: target not empty
        run_bakup("prune", "--dry-run", env=env),
        run_bakup("backup", env={**env, "DATABASE_URL": wrong_db}),
        run_bakup("backup", env={**env, "DATABASE_URL": database.url.replace(":", ":x", 2)}),
        run_bakup("backup", env={**env, "DATABASE_URL": database.url + "?bogus=1"}),
        run_bakup("restore", "latest", "--target-url", wrong_db, env=env),
    ]
    assert [run.returncode for run in runs] == [0, 0, 0, 0, 0, 1, 0, 1, 2, 2, 1]

    texts = [run.stdout + run.stderr for run in runs]
    texts += [path.read_text(errors="replace") for path in backup_dir.glob("*.json")]
    argv_log = (bin_dir / "argv.log").read_text()
    assert "--no-password" in argv_log and "pg_restore" not in argv_log.split()[0]
    texts.append(argv_log)
    for text in texts:
        for secret in secret_forms(password):
            assert secret not in text, text
