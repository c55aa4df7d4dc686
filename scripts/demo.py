#!/usr/bin/env python3
"""`make demo`: a throwaway PostgreSQL with sample data, a real backup, the listing, a restore
into a second database and a table-by-table comparison of row counts; then Redis and the worker
with beat on a 30-second schedule, showing scheduled backups being taken, verified by a test
restore and pruned.

Everything lives in .demo/ (server, backups, logs) and every process is stopped at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bakup.schedule import Schedule, parse_schedule  # noqa: E402
from tests.support import postgres_server, redis_server  # noqa: E402
from tests.support.sample_data import load_sample_data  # noqa: E402

DEMO = REPO / ".demo"


def step(title: str) -> None:
    """Print a heading for the next step."""
    print(f"\n\033[1m==> {title}\033[0m", flush=True)


def bakup(*args: str, env: dict[str, str], quiet: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the bakup command line, showing its output; exits the demo if it fails."""
    if not quiet:
        print(f"$ bakup {' '.join(args)}", flush=True)
    # stderr passes through: on a terminal it carries the live progress line.
    result = subprocess.run(
        [sys.executable, "-m", "bakup.cli", *args],
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if quiet else None,
    )
    if not quiet or result.returncode != 0:
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr or "")
    if result.returncode != 0:
        sys.exit(f"demo failed: bakup {args[0]} exited {result.returncode}")
    return result


def main() -> int:
    """Run the demo; returns 0 when the restored row counts match the backup's."""
    shutil.rmtree(DEMO, ignore_errors=True)
    DEMO.mkdir()
    step("Starting a throwaway PostgreSQL server")
    server = postgres_server.start(DEMO / "postgres")
    try:
        server.psql("postgres", "CREATE DATABASE shop")
        server.psql("postgres", "CREATE DATABASE shop_restored")
        load_sample_data(server, "shop")
        print(f"PostgreSQL on 127.0.0.1:{server.port}, database 'shop' loaded with sample data")

        env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "DATABASE_URL": server.url("shop"),
            "TARGET_DATABASE_URL": server.url("shop_restored"),
            "BACKUP_DIR": str(DEMO / "backups"),
        }
        step("Checking the set-up")
        bakup("check", env=env)
        step("Taking a backup")
        bakup("backup", env=env)
        step("Listing backups")
        bakup("list", env=env)
        listing = json.loads(bakup("list", "--json", env=env, quiet=True).stdout)
        step("Restoring it into a second database")
        bakup("restore", "latest", env=env)

        step("Comparing row counts: backup manifest vs restored database")
        manifest = json.loads((DEMO / "backups" / f"{listing[-1]['name']}.json").read_text())
        all_match = True
        print(f"{'table':36} {'in backup':>10} {'restored':>10}")
        for table, expected in sorted(manifest["table_row_counts"].items()):
            schema, _, name = table.partition(".")
            quoted = ".".join('"' + part.replace('"', '""') + '"' for part in (schema, name))
            restored = int(server.psql("shop_restored", f"SELECT count(*) FROM {quoted}"))
            mark = "ok" if restored == expected else "MISMATCH"
            all_match &= restored == expected
            print(f"{table:36} {expected:>10} {restored:>10}  {mark}")
        print("\nAll row counts match." if all_match else "\nRow counts differ!")
        if not all_match:
            return 1
        return run_scheduled(env)
    finally:
        server.stop()


def run_scheduled(env: dict[str, str]) -> int:
    """Start Redis and `bakup worker --beat` on a 30 s schedule; show two scheduled runs."""
    step("Starting Redis and the worker with beat (BACKUP_SCHEDULE='every 30s', MAX_BACKUPS=2)")
    broker = redis_server.start()
    log_path = DEMO / "worker.log"
    worker_env = {
        **env,
        "REDIS_URL": broker.url(),
        "BACKUP_SCHEDULE": "every 30s",
        "MAX_BACKUPS": "2",
        "VERIFY_LEVEL": "restore",
        "BEAT_SCHEDULE_FILE": str(DEMO / "beat-schedule"),
    }
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [sys.executable, "-m", "bakup.cli", "worker", "--beat"],
            env=worker_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    schedule = parse_schedule(worker_env["BACKUP_SCHEDULE"])
    print(
        f"The worker is starting (its log: {log_path}). Scheduled backups run every 30 s, at "
        f"the minute and the half minute (UTC); the first is due at "
        f"{_next_run(schedule)}. Waiting for it...",
        flush=True,
    )
    shown = 0
    try:
        deadline = time.monotonic() + 150
        last_output = time.monotonic()
        while time.monotonic() < deadline:
            lines = log_path.read_text(errors="replace").splitlines()
            for line in lines[shown:]:
                if any(word in line for word in _INTERESTING):
                    print(line, flush=True)
                    last_output = time.monotonic()
            shown = len(lines)
            if time.monotonic() - last_output >= WAITING_NOTE_SECONDS:
                # A silent terminal for half a minute looks like a hang: say what is awaited.
                print(
                    f"  ... waiting for the scheduled run due at {_next_run(schedule)}", flush=True
                )
                last_output = time.monotonic()
            text = "\n".join(lines)
            if (
                text.count("Backup verified successfully") >= 2
                and "Deleted postgres_backup_" in text
            ):
                break
            if worker.poll() is not None:
                print(f"the worker exited with status {worker.returncode}; see {log_path}")
                return 1
            time.sleep(1)
        else:
            print(f"no two scheduled backups within 150 s; see {log_path}")
            return 1
        step("Backups now (two kept, each verified by a test restore)")
        bakup("list", env=env)
        print(f"\nBackups are in {DEMO / 'backups'}; the worker's log is {log_path}")
        return 0
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
        broker.stop()


WAITING_NOTE_SECONDS = 10


def _next_run(schedule: Schedule) -> str:
    """The schedule's next fire time as HH:MM:SS UTC."""
    return f"{schedule.next_fire(datetime.now(UTC)):%H:%M:%S} UTC"


_INTERESTING = (
    "Sending due task",
    "Starting PostgreSQL database backup",
    "Backup completed successfully",
    "Backup verified successfully",
    "ok: restored",
    "Deleted postgres_backup_",
    "ERROR",
)


if __name__ == "__main__":
    sys.exit(main())
