"""Secrets in a database URL stay secret: a password with unencoded characters is refused
without echoing any piece of it, and secrets other than the password (sslpassword) never reach
a program's argv."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import Database, base_env, run_bakup
from tests.integration.faults import fake_pg_bin
from tests.integration.test_faults import assert_one_line_error

pytestmark = pytest.mark.integration

UNENCODED = "the password seems to contain unencoded characters"


@pytest.mark.parametrize("password", ["Qx7#Pw9-SECRET", "Qx7@Zs9-SECRET", "Qx7/Zs9-SECRET"])
def test_a_password_with_unencoded_characters_is_refused_and_never_echoed(
    small_db: Database, tmp_path: Path, password: str
) -> None:
    backup_dir = tmp_path / "b"
    good = run_bakup("backup", env=base_env(DATABASE_URL=small_db.url, BACKUP_DIR=str(backup_dir)))
    assert good.returncode == 0, good.stderr
    server = small_db.server
    url = f"postgresql://{server.user}:{password}@{server.host}:{server.port}/{small_db.name}"
    env = base_env(DATABASE_URL=url, BACKUP_DIR=str(backup_dir))

    backup = run_bakup("backup", env=env)
    assert_one_line_error(backup, 2, "DATABASE_URL", UNENCODED, "percent-encode the password")
    check = run_bakup("check", env=env)
    assert check.returncode == 2 and UNENCODED in check.stdout

    texts = [run.stdout + run.stderr for run in (backup, check)]
    texts += [path.read_text(errors="replace") for path in backup_dir.iterdir() if path.is_file()]
    pieces = {password, *password.replace("#", "@").replace("/", "@").split("@")}
    for text in texts:
        for piece in pieces:
            assert piece not in text, (piece, text)


def test_sslpassword_never_reaches_pg_dumps_argv(small_db: Database, tmp_path: Path) -> None:
    ssl_secret = "key-passphrase-SECRET-77"
    bin_dir = fake_pg_bin(tmp_path / "bin")
    url = f"{small_db.url}?sslmode=disable&sslpassword={quote(ssl_secret, safe='')}"
    env = base_env(DATABASE_URL=url, BACKUP_DIR=str(tmp_path / "b"), PG_BIN_DIR=str(bin_dir))
    result = run_bakup("backup", env=env)
    # pg_dump connected (libpq read the connection's service file), with no secret in argv.
    assert result.returncode == 0, result.stderr
    argv = (bin_dir / "argv.log").read_text()
    assert "--dbname=" in argv and "service=" in argv
    for secret in (ssl_secret, quote(ssl_secret, safe=""), small_db.server.password):
        assert secret not in argv
        assert secret not in result.stdout + result.stderr
    manifests = [path.read_text() for path in (tmp_path / "b").glob("*.json")]
    assert manifests and not any(ssl_secret in text for text in manifests)
