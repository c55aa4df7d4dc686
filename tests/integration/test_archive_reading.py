"""Reading real pg_dump archives: rows counted in the archives older cron scripts made with
``pg_dump -Fc`` (zlib-compressed data blocks), by both the C and the Python scanners."""

from __future__ import annotations

import gzip
import hashlib
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from bakup import archive
from bakup.archive import RowCounter
from bakup.catalog import unrecorded_backup
from bakup.storage.local import LocalStorage
from bakup.verify import check_integrity, describe_stored
from tests.conftest import Database
from tests.support.postgres_server import find_server_bin

pytestmark = pytest.mark.integration


@pytest.fixture(params=["c", "python"])
def scanner(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test with the C scanner (skipped when not built), then with the Python one."""
    if request.param == "c":
        if archive.gather_chunks is archive.gather_chunks_python:
            pytest.skip("C scanner not built")
    else:
        monkeypatch.setattr(archive, "scan_data", archive.scan_data_python)
        monkeypatch.setattr(archive, "gather_chunks", archive.gather_chunks_python)
    yield request.param


def pg_dump(database: Database, *options: str) -> bytes:
    """The custom-format archive of ``database`` as pg_dump writes it with ``options``."""
    env = {**os.environ, "PGPASSWORD": database.server.password}
    return subprocess.run(
        [
            str(find_server_bin() / "pg_dump"),
            "-Fc",
            *options,
            "-h",
            database.server.host,
            "-p",
            str(database.server.port),
            "-U",
            database.server.user,
            database.name,
        ],
        check=True,
        capture_output=True,
        env=env,
    ).stdout


def count_in_random_pieces(data: bytes, seed: int) -> archive.ArchiveSummary:
    rng = random.Random(seed)
    counter = RowCounter()
    position = 0
    while position < len(data):
        size = rng.randint(1, 3000)
        counter.feed(data[position : position + size])
        position += size
    return counter.finish()


def test_rows_of_a_default_pg_dump_fc_archive_are_counted(small_db: Database, scanner: str) -> None:
    small_db.psql(
        "CREATE SCHEMA s; CREATE TABLE s.lines AS SELECT g AS id, E'two\\nlines ' || g AS body, "
        "repeat('x', g % 700) AS pad FROM generate_series(1, 20000) g;"
        "CREATE TABLE empty (id int); CREATE TABLE no_columns (); "
        "INSERT INTO no_columns SELECT FROM generate_series(1, 7)"
    )
    expected = {"public.t": 3000, "s.lines": 20000, "public.empty": 0, "public.no_columns": 7}
    compressed = pg_dump(small_db)  # pg_dump's default for -Fc: zlib data blocks
    summary = count_in_random_pieces(compressed, seed=len(compressed))
    assert summary.data_compression == "gzip"
    assert summary.row_counts == expected
    assert summary.database == small_db.name

    plain = count_in_random_pieces(pg_dump(small_db, "--compress=0"), seed=1)
    assert plain.data_compression == "none"
    assert plain.row_counts == expected


def test_a_pg_dump_fc_archive_with_a_damaged_data_block_is_rejected(small_db: Database) -> None:
    data = bytearray(pg_dump(small_db, "--compress=9"))
    data[-200] ^= 0xFF  # inside the last table's zlib stream, after the table of contents
    with pytest.raises(archive.ArchiveFormatError, match="compressed data"):
        count_in_random_pieces(bytes(data), seed=2)


def test_a_cron_made_backup_is_described_then_checked_like_any_other(
    small_db: Database, tmp_path: Path
) -> None:
    # What the old cron script left: pg_dump -Fc (zlib data blocks), then gzip over it.
    archive_bytes = pg_dump(small_db)
    name = "postgres_backup_20250101_020000.sql.gz"
    (tmp_path / name).write_bytes(gzip.compress(archive_bytes))
    storage = LocalStorage(tmp_path)
    found = unrecorded_backup(name, (tmp_path / name).stat().st_size, small_db.name, "cron")

    described, checks = describe_stored(storage, found)
    assert described.table_row_counts == {"public.t": 3000}
    assert described.sha256 == hashlib.sha256((tmp_path / name).read_bytes()).hexdigest()
    assert described.raw_size_bytes == len(archive_bytes)
    assert described.archive_version.startswith("1.")
    assert any("zlib data blocks" in check for check in checks)
    assert "pg_restore --list reads its table of contents" in check_integrity(storage, described)
