"""Helpers that cause faults for real: a pg_dump that dies half way, full and read-only disks,
a SIGKILL at a crash point and the recovery after it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from bakup.catalog import NAME_PATTERN
from tests.conftest import REPO, run_bakup
from tests.support.postgres_server import find_server_bin


def data_partials(folder: Path) -> list[Path]:
    """Return the hidden partial files of backups being written in ``folder``
    (``.<backup name>.partial``), not the temporary files of manifests or leases
    (``.<name>.<pid>.<thread>.partial``): a run killed while only those exist has no data yet."""
    return [
        path
        for path in folder.glob(".*.partial")
        if NAME_PATTERN.match(path.name[1 : -len(".partial")])
    ]


def fake_pg_bin(
    directory: Path,
    *,
    kill_after_bytes: int | None = None,
    pause_seconds: float = 0,
    failing_pg_dumpall: bool = False,
) -> Path:
    """Make a PG_BIN_DIR whose pg_dump records its argv, runs the real pg_dump and, if asked,
    pauses after some output and then dies by SIGKILL half way through the stream. Its
    pg_restore and pg_dumpall record their argv too and run the real ones; with
    ``failing_pg_dumpall``, pg_dumpall answers --version but otherwise fails (exit 1)."""
    directory.mkdir(parents=True, exist_ok=True)
    real = find_server_bin()
    argv_log = directory / "argv.log"
    body = [
        "#!/bin/bash",
        f'printf "%s\\n" "$*" >> {argv_log}',
    ]
    if kill_after_bytes is None:
        body.append(f'exec {real}/pg_dump "$@"')
    else:
        body += [
            f'{real}/pg_dump "$@" | head -c {kill_after_bytes}',
            f"sleep {pause_seconds}",
            "kill -KILL $$",
        ]
    script = directory / "pg_dump"
    script.write_text("\n".join(body) + "\n")
    script.chmod(0o755)
    restore = directory / "pg_restore"
    restore.write_text(
        f'#!/bin/bash\nprintf "%s\\n" "$*" >> {argv_log}\nexec {real}/pg_restore "$@"\n'
    )
    restore.chmod(0o755)
    dumpall = directory / "pg_dumpall"
    if failing_pg_dumpall:
        dumpall.write_text(
            f'#!/bin/bash\n[ "$1" = --version ] && exec {real}/pg_dumpall --version\n'
            'echo "pg_dumpall: error: refused by the test" >&2\nexit 1\n'
        )
    else:
        dumpall.write_text(
            f'#!/bin/bash\nprintf "%s\\n" "$*" >> {argv_log}\nexec {real}/pg_dumpall "$@"\n'
        )
    dumpall.chmod(0o755)
    return directory


def pausing_pg_bin(directory: Path, *, pause_after_bytes: int, pause_seconds: float) -> Path:
    """Make a PG_BIN_DIR whose pg_dump stops for a while after some output, then finishes:
    a backup that is surely mid-upload at a known moment."""
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "pg_dump"
    script.write_text(
        f'#!/bin/bash\n{find_server_bin()}/pg_dump "$@" | '
        f"{{ head -c {pause_after_bytes}; sleep {pause_seconds}; cat; }}\n"
    )
    script.chmod(0o755)
    return directory


def interrupt_mid_upload(
    env: dict[str, str],
    *,
    uploading: Callable[[], bool],
    interrupt: Callable[[subprocess.Popen[str]], object],
    timeout: float = 60,
) -> tuple[int, str, str]:
    """Start ``bakup backup`` with ``env`` (whose PG_BIN_DIR should pause, see
    ``pausing_pg_bin``), wait until ``uploading()`` sees its multipart upload in the store,
    then ``interrupt(process)``; returns the exit status, stdout and stderr."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bakup.cli", "backup"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + timeout
    while not uploading():
        if time.monotonic() > deadline or process.poll() is not None:
            process.kill()
            raise AssertionError("the backup never started its upload: " + process.stderr.read())
        time.sleep(0.1)
    interrupt(process)
    stdout, stderr = process.communicate(timeout=300)
    return process.returncode, stdout, stderr


def is_root() -> bool:
    return os.geteuid() == 0


@contextmanager
def small_filesystem(mount_point: Path, size: str) -> Iterator[Path]:
    """Mount a tmpfs of ``size`` at ``mount_point`` (root only) for the duration."""
    mount_point.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(mount_point)],
        check=True,
    )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@contextmanager
def read_only_directory(path: Path) -> Iterator[Path]:
    """Make ``path`` unwritable: a read-only tmpfs as root (root ignores modes), else mode 0500."""
    path.mkdir(parents=True, exist_ok=True)
    if is_root():
        subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], check=True)
        try:
            yield path
        finally:
            subprocess.run(["umount", "-l", str(path)], check=False)
    else:
        path.chmod(0o500)
        try:
            yield path
        finally:
            path.chmod(0o700)


def crash_then_recover(env: dict[str, str], point: str) -> list[str]:
    """Kill ``bakup backup`` (and the prune after it) at crash point ``point`` with a real
    SIGKILL; check that every backup listed after the crash verifies, that the next backup
    succeeds and that every backup listed after it verifies too. Returns the names listed at
    the end."""
    crashed = run_bakup("backup", env={**env, "BAKUP_CRASH_AT": point})
    assert crashed.returncode == -signal.SIGKILL, crashed.stdout + crashed.stderr

    def every_listed_backup_verifies() -> list[str]:
        listing = json.loads(run_bakup("list", "--json", env=env).stdout)
        for item in listing:
            checked = run_bakup("verify", item["name"], env=env)
            assert checked.returncode == 0, (item, checked.stdout + checked.stderr)
        return [item["name"] for item in listing]

    assert every_listed_backup_verifies()
    recovered = run_bakup("backup", env=env)
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    return every_listed_backup_verifies()
