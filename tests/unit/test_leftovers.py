"""Where beat's schedule file goes by default, and which metrics folders a starting worker
may remove."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from bakup.lifecycle import Owner
from bakup.settings import Settings, default_beat_schedule_file
from metrics.exposition import OWNER_FILE, remove_stale_multiprocess_dirs


def test_the_schedule_file_defaults_to_a_dot_file_beside_local_backups() -> None:
    env = {"BACKUP_DIR": "/var/lib/bakup/backups"}
    settings = Settings.from_env(env, require_database=False)
    assert settings.beat_schedule_file == Path("/var/lib/bakup/backups/.celerybeat-schedule")


def test_the_schedule_file_follows_a_storage_url_folder() -> None:
    path = default_beat_schedule_file(Path("backups"), ["/srv/dumps", "s3://bucket/x"], {})
    assert path == Path("/srv/dumps/.celerybeat-schedule")


def test_with_only_object_storage_the_schedule_file_goes_to_the_xdg_state_directory() -> None:
    env = {"XDG_STATE_HOME": "/home/ops/.state"}
    path = default_beat_schedule_file(Path("backups"), ["s3://bucket/prefix"], env)
    assert path == Path("/home/ops/.state/bakup/celerybeat-schedule")
    assert default_beat_schedule_file(Path("b"), ["gs://b/p"], {}).parts[-4:] == (
        ".local",
        "state",
        "bakup",
        "celerybeat-schedule",
    )


def test_beat_schedule_file_wins_when_set() -> None:
    env = {"BACKUP_DIR": "/b", "BEAT_SCHEDULE_FILE": "/state/beat"}
    assert Settings.from_env(env, require_database=False).beat_schedule_file == Path("/state/beat")


def _folder(parent: Path, name: str, owner: Owner | None) -> Path:
    folder = parent / f"bakup-metrics-{name}"
    folder.mkdir()
    if owner is not None:
        (folder / OWNER_FILE).write_text(json.dumps(owner.to_json()))
    return folder


def test_only_folders_whose_owner_is_provably_dead_are_removed(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.1)"])
    me = Owner.current()
    dead_owner = replace(me, pid=child.pid, started=1)
    child.wait()  # now gone: no process has its pid and start time
    dead = _folder(tmp_path, "dead", dead_owner)
    reused = _folder(tmp_path, "reused", replace(me, started=(me.started or 0) + 1))
    alive = _folder(tmp_path, "alive", me)
    elsewhere = _folder(tmp_path, "elsewhere", replace(dead_owner, host="another-host"))
    unrecorded = _folder(tmp_path, "unrecorded", None)
    garbled = _folder(tmp_path, "garbled", None)
    (garbled / OWNER_FILE).write_text("{not json")

    removed = remove_stale_multiprocess_dirs(tmp_path)

    assert sorted(removed) == sorted([dead, reused])
    assert not dead.exists() and not reused.exists()
    assert all(folder.exists() for folder in (alive, elsewhere, unrecorded, garbled))
