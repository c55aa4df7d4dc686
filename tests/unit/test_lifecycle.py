"""The sweep's decisions on a real folder: only provably dead claims and recorded deletions are
acted on; a live claim, a manifest being written and unrecorded data are never deleted."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from bakup.catalog import manifest_bytes, manifest_name
from bakup.lifecycle import Claim, Owner, claim, sweep
from bakup.storage.local import LocalStorage

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def make_claim(storage: LocalStorage, name: str, owner: Owner, lease_minutes: float = 10) -> None:
    claim = Claim(name, "app", NOW, owner, datetime.now(UTC) + timedelta(minutes=lease_minutes))
    assert storage.create_small(manifest_name(name), manifest_bytes(claim.to_json()))


def dead_owner() -> Owner:
    """An owner on this machine whose process has exited."""
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return replace(Owner.current(), pid=int(child.stdout), started=1)


def test_sweep_removes_a_dead_claim_keeps_a_live_one_and_ignores_manifest_writes(
    tmp_path: Path,
) -> None:
    storage = LocalStorage(tmp_path)
    storage.prepare()
    dead, live = "postgres_backup_20261125_010000.sql.gz", "postgres_backup_20261125_020000.sql.gz"
    make_claim(storage, dead, dead_owner())
    (tmp_path / f".{dead}.partial").write_bytes(b"half")
    make_claim(storage, live, Owner.current())
    writer = storage.open_writer(live)  # its data being written, its lock held
    writer.write(b"in progress")
    being_written = tmp_path / f".{live}.json.partial"  # another run's manifest write
    being_written.write_bytes(b"{}")

    done = sweep(storage, "app")

    assert done.removed == [dead] and done.live == {live}
    assert not (tmp_path / manifest_name(dead)).exists()
    assert not (tmp_path / f".{dead}.partial").exists()
    assert writer.partial_path.exists() and being_written.exists()
    assert json.loads((tmp_path / manifest_name(live)).read_text())["status"] == "running"
    writer.abort()


def test_a_claim_of_another_machine_is_dead_only_once_its_lease_ran_out(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.prepare()
    elsewhere = Owner("another-host", "another-boot", 1234, 99)
    make_claim(storage, "postgres_backup_20261125_010000.sql.gz", elsewhere, lease_minutes=5)
    make_claim(storage, "postgres_backup_20261125_020000.sql.gz", elsewhere, lease_minutes=-1)
    done = sweep(storage, "app")
    assert done.removed == ["postgres_backup_20261125_020000.sql.gz"]
    assert done.live == {"postgres_backup_20261125_010000.sql.gz"}


def test_a_dead_claim_whose_data_was_published_is_adopted_not_deleted(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.prepare()
    name = "postgres_backup_20261125_010000.sql.gz"
    make_claim(storage, name, dead_owner())
    (tmp_path / name).write_bytes(b"a complete archive")
    done = sweep(storage, "app")
    assert done.adopted == [name] and (tmp_path / name).exists()
    assert json.loads((tmp_path / manifest_name(name)).read_text())["status"] == "adopted"


def test_a_claims_lease_counts_from_when_it_is_taken_not_from_its_names_whole_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name has one-second resolution; its lease must not lose the fraction of a second the
    name drops (a short lease would start already within its margin)."""
    monkeypatch.setenv("BAKUP_LEASE_SECONDS", "4")
    storage = LocalStorage(tmp_path)
    before = datetime.now(UTC)
    claimed = claim(storage, "shop", "gzip", encrypted=False)
    assert claimed.lease_expires_at >= before + timedelta(seconds=4)
    recorded = json.loads((tmp_path / manifest_name(claimed.name)).read_text())
    assert datetime.fromisoformat(recorded["lease_expires_at"]) == claimed.lease_expires_at
