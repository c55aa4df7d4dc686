"""A failed restore's advice names the variable (or option) the target came from."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.integration.faults import fake_pg_bin
from tests.integration.test_faults import assert_one_line_error
from tests.support.postgres_server import free_port

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("option", [False, True])
def test_a_restore_failure_names_the_variable_the_target_came_from(
    small_db: Database, tmp_path: Path, option: bool
) -> None:
    backup_dir = tmp_path / "backups"
    made = run_bakup("backup", env=base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir)))
    assert made.returncode == 0, made.stderr
    unreachable = small_db.server.url("restore_here").replace(
        f":{small_db.server.port}/", f":{free_port()}/"
    )
    env = base_env(BACKUP_DIR=str(backup_dir))
    if option:
        result = run_bakup("restore", "latest", "--target-url", unreachable, env=env)
        named = "--target-url"
    else:
        env["TARGET_DATABASE_URL"] = unreachable
        result = run_bakup("restore", "latest", env=env)
        named = "TARGET_DATABASE_URL"
    assert_one_line_error(result, 1, "Connection refused", named)
    assert re.search(r"(?<![\w-])DATABASE_URL", result.stderr.replace(named, "")) is None


def test_sslpassword_of_the_target_never_reaches_pg_restores_argv(
    small_db: Database, target_database: Database, tmp_path: Path
) -> None:
    ssl_secret = "target-key-passphrase-SECRET-9"
    backup_dir = tmp_path / "backups"
    made = run_bakup("backup", env=base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir)))
    assert made.returncode == 0, made.stderr
    bin_dir = fake_pg_bin(tmp_path / "bin")
    target = f"{target_database.url}?sslmode=disable&sslpassword={quote(ssl_secret, safe='')}"
    env = base_env(BACKUP_DIR=str(backup_dir), TARGET_DATABASE_URL=target, PG_BIN_DIR=str(bin_dir))
    result = run_bakup("restore", "latest", "--jobs", "2", env=env)
    assert result.returncode == 0, result.stderr
    assert target_database.psql("SELECT count(*) FROM t") == "3000"
    argv = (bin_dir / "argv.log").read_text()
    assert "--jobs=2" in argv and "service=" in argv
    for secret in (ssl_secret, quote(ssl_secret, safe=""), target_database.server.password):
        assert secret not in argv
        assert secret not in result.stdout + result.stderr
