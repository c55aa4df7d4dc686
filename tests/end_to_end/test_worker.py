"""The worker and beat as deployed: real redis-server, real Celery processes, real PostgreSQL,
schedules of seconds."""

from __future__ import annotations

import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis

from tests.conftest import Database
from tests.end_to_end.conftest import (
    Services,
    complete_backups,
    send_backup,
    wait_for,
    worker_env,
)
from tests.integration.faults import data_partials, fake_pg_bin
from tests.support import redis_server
from tests.support.postgres_server import find_server_bin, free_port
from tests.support.receivers import HttpReceiver

pytestmark = pytest.mark.end_to_end


def cron_line_minutes_ago(minutes: int) -> str:
    """A daily cron line whose latest fire time was ``minutes`` ago."""
    moment = datetime.now(UTC) - timedelta(minutes=minutes)
    return f"{moment.minute} {moment.hour} * * *"


def test_scheduled_backups_happen_then_verify_and_prune(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services
) -> None:
    backup_dir = tmp_path / "backups"
    env = worker_env(
        small_db,
        backup_dir,
        redis_url,
        BACKUP_SCHEDULE="every 4s",
        MAX_BACKUPS="2",
        VERIFY_LEVEL="restore",
    )
    worker = services.start("worker", "--beat", "--concurrency", "2", env=env)
    wait_for(
        lambda: worker.count("Backup verified successfully") >= 3, 60, "three verified backups"
    )
    wait_for(lambda: worker.count("Deleted postgres_backup_") >= 1, 30, "pruning")
    assert worker.stop() == 0
    backups = complete_backups(backup_dir)
    assert len(backups) <= 3  # two kept, perhaps one more taken after the last prune
    assert all(backup["verified"] for backup in backups[:2])
    assert backups[0]["verification"]["level"] == "restore"
    assert "Traceback" not in worker.output()


def test_a_database_already_being_backed_up_is_skipped_not_run_twice(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services
) -> None:
    backup_dir = tmp_path / "backups"
    slow = fake_pg_bin(tmp_path / "bin", kill_after_bytes=None, pause_seconds=0)
    slow_dump = slow / "pg_dump"
    slow_dump.write_text(slow_dump.read_text().replace("exec ", "sleep 4; exec "))
    env = worker_env(small_db, backup_dir, redis_url, PG_BIN_DIR=str(slow))
    worker = services.start("worker", "--concurrency", "2", env=env)
    wait_for(lambda: "ready" in worker.output(), 30, "the worker to start")
    send_backup(redis_url, small_db.name, scheduled=False)
    send_backup(redis_url, small_db.name, scheduled=False)
    wait_for(lambda: worker.count("another backup of it is running") == 1, 30, "the skip")
    wait_for(lambda: worker.count("Backup completed successfully") == 1, 30, "the backup")
    assert len(complete_backups(backup_dir)) == 1


def test_killed_worker_leaves_no_partial_backup_and_the_backup_is_taken_when_one_is_back(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services
) -> None:
    backup_dir = tmp_path / "backups"
    hanging = fake_pg_bin(tmp_path / "bin", kill_after_bytes=20_000, pause_seconds=120)
    schedule = cron_line_minutes_ago(3)  # missed three minutes ago: catch-up takes it
    env = worker_env(small_db, backup_dir, redis_url, BACKUP_SCHEDULE=schedule)
    first = services.start("worker", env={**env, "PG_BIN_DIR": str(hanging)})
    wait_for(lambda: data_partials(backup_dir), 60, "a backup in progress")
    first.kill()
    assert complete_backups(backup_dir) == []

    second = services.start("worker", env=env)
    wait_for(lambda: len(complete_backups(backup_dir)) == 1, 60, "the backup to be retaken")
    wait_for(lambda: not list(backup_dir.glob(".*.partial")), 30, "the leftover to go")
    assert second.count("its run was interrupted") == 1
    assert second.count("Catching up") == 1


def test_a_worker_started_after_a_missed_schedule_catches_up_once(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services
) -> None:
    backup_dir = tmp_path / "backups"
    env = worker_env(small_db, backup_dir, redis_url, BACKUP_SCHEDULE=cron_line_minutes_ago(5))
    worker = services.start("worker", "--beat", env=env)
    wait_for(lambda: len(complete_backups(backup_dir)) == 1, 60, "the catch-up backup")
    # Further periodic checks find the slot done and queue nothing more.
    wait_for(lambda: worker.count("bakup.catch_up") >= 8, 30, "more catch-up checks")
    assert len(complete_backups(backup_dir)) == 1
    assert worker.count("Catching up") == 1


def test_two_beats_started_by_mistake_still_give_one_run_per_tick_and_beat_restarts_cleanly(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services
) -> None:
    backup_dir = tmp_path / "backups"
    env = worker_env(small_db, backup_dir, redis_url, BACKUP_SCHEDULE="every 3s")
    worker = services.start("worker", "--concurrency", "2", env=env)
    beats = [
        services.start("beat", env={**env, "BEAT_SCHEDULE_FILE": str(tmp_path / f"beat-{n}")})
        for n in range(2)
    ]
    wait_for(lambda: worker.count("Backup completed successfully") >= 3, 60, "three ticks")
    assert beats[0].stop() == 0
    restarted = services.start("beat", env={**env, "BEAT_SCHEDULE_FILE": str(tmp_path / "beat-0")})
    wait_for(lambda: worker.count("Backup completed successfully") >= 6, 60, "three more ticks")
    for service in (restarted, beats[1], worker):
        service.stop()

    slots = [
        int(datetime.fromisoformat(backup["created_at"]).timestamp()) // 3
        for backup in complete_backups(backup_dir)
    ]
    assert len(slots) == len(set(slots)), "two backups in one schedule slot"
    # The second beat's messages were skipped: locked (same instant) or slot already done.
    assert worker.count("Skipped backup of") >= 1
    assert "Traceback" not in restarted.output()


def test_transient_failures_are_retried_with_backoff_then_fail(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services
) -> None:
    backup_dir = tmp_path / "backups"
    closed = small_db.url.replace(f":{small_db.server.port}/", f":{free_port()}/")
    env = worker_env(small_db, backup_dir, redis_url, DATABASE_URL=closed, BACKUP_RETRIES="2")
    worker = services.start("worker", env=env)
    wait_for(lambda: "ready" in worker.output(), 30, "the worker to start")
    send_backup(redis_url, small_db.name, scheduled=False)
    wait_for(lambda: "raised expected" in worker.output(), 60, "the final failure")
    # Two attempts that were retried are warnings; only the outcome is the script's ERROR.
    assert worker.count("WARNING: Backup attempt failed, it will be retried") == 2
    assert worker.count("ERROR: Failed to create backup") == 1
    assert worker.count("Retrying the backup") == 2
    assert "Connection refused" in worker.output()


def test_permanent_failures_are_not_retried(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services
) -> None:
    backup_dir = tmp_path / "backups"
    wrong = small_db.server.url(small_db.name, password="not-the-password")
    env = worker_env(small_db, backup_dir, redis_url, DATABASE_URL=wrong)
    worker = services.start("worker", env=env)
    wait_for(lambda: "ready" in worker.output(), 30, "the worker to start")
    send_backup(redis_url, small_db.name, scheduled=False)
    wait_for(lambda: "raised expected" in worker.output(), 30, "the failure")
    assert worker.count("ERROR: Failed to create backup") == 1
    assert worker.count("Retrying the backup") == 0
    assert "password authentication failed" in worker.output()
    assert small_db.server.password not in worker.output()


def test_sigterm_lets_the_running_backup_finish(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services
) -> None:
    backup_dir = tmp_path / "backups"
    slow = fake_pg_bin(tmp_path / "bin")
    slow_dump = slow / "pg_dump"
    slow_dump.write_text(slow_dump.read_text().replace("exec ", "sleep 3; exec "))
    env = worker_env(small_db, backup_dir, redis_url, PG_BIN_DIR=str(slow))
    worker = services.start("worker", env=env)
    wait_for(lambda: "ready" in worker.output(), 30, "the worker to start")
    send_backup(redis_url, small_db.name, scheduled=False)
    wait_for(lambda: data_partials(backup_dir), 30, "the backup to start")
    assert worker.stop(timeout=60) == 0
    assert len(complete_backups(backup_dir)) == 1
    assert not list(backup_dir.glob(".*.partial"))
    assert "Backup completed successfully" in worker.output()


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children...)."""
    found: set[int] = set()
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        children = subprocess.run(
            ["pgrep", "-P", str(parent)], capture_output=True, text=True
        ).stdout.split()
        for child in map(int, children):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_worker_killed_with_sigkill_takes_its_beat_and_pool_with_it(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services
) -> None:
    """Promise: the service never silently stops backing up: no orphaned beat keeps queueing
    backups nobody takes (and no second beat appears once the worker is restarted)."""
    env = worker_env(small_db, tmp_path / "backups", redis_url, BACKUP_SCHEDULE="every 1s")
    worker = services.start("worker", "--beat", "--concurrency", "2", env=env)
    wait_for(lambda: worker.count("Backup completed successfully") >= 1, 60, "a backup")
    below = descendants(worker.process.pid)
    assert len(below) >= 3  # beat and two pool processes
    worker.process.send_signal(signal.SIGKILL)  # the main process only, as the OOM killer does
    worker.process.wait()
    wait_for(lambda: not [pid for pid in below if alive(pid)], 20, "its children to go")
    queue = redis.Redis.from_url(redis_url)
    queued = queue.llen("bakup")
    time.sleep(3)  # three ticks of the schedule: a live beat would have queued three backups
    assert queue.llen("bakup") == queued


def flaky_pg_bin(directory: Path, failures: int) -> Path:
    """A PG_BIN_DIR whose pg_dump fails as an unreachable server does, ``failures`` times,
    then works: a database that is down for a few retries and comes back."""
    directory.mkdir(parents=True, exist_ok=True)
    counter = directory / "calls"
    script = directory / "pg_dump"
    script.write_text(
        "#!/bin/bash\n"
        f"n=$(( $(cat {counter} 2>/dev/null || echo 0) + 1 )); echo $n > {counter}\n"
        f'if [ "$n" -le {failures} ]; then\n'
        '  echo \'pg_dump: error: connection to server at "127.0.0.1", port 5432 failed: '
        "Connection refused' >&2\n"
        "  exit 1\n"
        "fi\n"
        f'exec {find_server_bin()}/pg_dump "$@"\n'
    )
    script.chmod(0o755)
    (directory / "pg_restore").symlink_to(f"{find_server_bin()}/pg_restore")
    return directory


def test_a_database_down_for_two_attempts_gives_one_backup_for_its_slot_and_no_alert(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services, http: HttpReceiver
) -> None:
    """Promise: alerts on outcomes, not attempts; one retry chain per slot: the catch-up
    check, running every 2 s, never starts a second chain while a retry is pending."""
    backup_dir = tmp_path / "backups"
    env = worker_env(
        small_db,
        backup_dir,
        redis_url,
        BACKUP_SCHEDULE=cron_line_minutes_ago(3),  # missed: catch-up takes it
        BACKUP_RETRIES="3",
        RETRY_BASE_SECONDS="3",
        RETRY_MAX_SECONDS="4",
        PG_BIN_DIR=str(flaky_pg_bin(tmp_path / "bin", failures=2)),
        SLACK_WEBHOOK_URL=f"{http.url}/services/T1/B1/token",
    )
    worker = services.start("worker", "--beat", "--concurrency", "2", env=env)
    wait_for(lambda: worker.count("Backup completed successfully") == 1, 90, "the backup")
    wait_for(lambda: worker.count("bakup.catch_up") >= 10, 30, "more catch-up checks")
    assert len(complete_backups(backup_dir)) == 1
    assert worker.count("WARNING: Backup attempt failed, it will be retried") == 2
    assert worker.count("ERROR: Failed to create backup") == 0
    assert worker.count("Catching up: no backup") == 1
    assert http.requests == []  # nothing failed for good: nobody is paged
    assert (tmp_path / "bin" / "calls").read_text().strip() == "3"


def test_a_backup_killed_by_its_time_limit_ends_its_slot_failed_with_one_alert(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services, http: HttpReceiver
) -> None:
    """Promise: every exit path ends in a state an operator sees; the slot is not left
    running for catch-up to retake again and again."""
    slow = fake_pg_bin(tmp_path / "bin")
    slow_dump = slow / "pg_dump"
    slow_dump.write_text(slow_dump.read_text().replace("exec ", "sleep 30; exec "))
    env = worker_env(
        small_db,
        tmp_path / "backups",
        redis_url,
        BACKUP_SCHEDULE=cron_line_minutes_ago(3),
        BACKUP_TIME_LIMIT="70",  # the soft limit comes a minute earlier: after 10 s
        PG_BIN_DIR=str(slow),
        SLACK_WEBHOOK_URL=f"{http.url}/services/T1/B1/token",
    )
    worker = services.start("worker", "--beat", "--concurrency", "2", env=env)
    wait_for(lambda: worker.count("ERROR: Failed to create backup") == 1, 60, "the time limit")
    wait_for(lambda: len(http.requests) == 1, 30, "the alert")
    wait_for(lambda: worker.count("bakup.catch_up") >= 10, 40, "more catch-up checks")
    assert worker.count("ERROR: Failed to create backup") == 1
    assert worker.count("Retaking the backup") == 0
    assert "SoftTimeLimitExceeded" in worker.output()
    assert len(http.requests) == 1
    assert not list((tmp_path / "backups").glob(".*.partial"))


def test_redis_killed_mid_backup_and_restarted_empty_loses_nothing_and_backups_resume(
    small_db: Database, tmp_path: Path, services: Services
) -> None:
    """Promise: the service never silently stops backing up: the backup that was running when
    Redis died is kept and verified (its verification recovered from what storage records),
    and scheduled backups go on once Redis is back, empty."""
    server = redis_server.start()
    backup_dir = tmp_path / "backups"
    slow = fake_pg_bin(tmp_path / "bin")
    slow_dump = slow / "pg_dump"
    slow_dump.write_text(slow_dump.read_text().replace("exec ", "sleep 6; exec "))
    env = worker_env(
        small_db,
        backup_dir,
        server.url(0),
        BACKUP_SCHEDULE="every 20s",
        PG_BIN_DIR=str(slow),
    )
    worker = services.start("worker", "--beat", "--concurrency", "2", env=env)
    try:
        wait_for(lambda: data_partials(backup_dir), 60, "a backup in progress")
        server.process.kill()
        server.process.wait()
        time.sleep(2)
        server = redis_server.start(server.port)  # back, and empty
        wait_for(lambda: len(complete_backups(backup_dir)) >= 1, 60, "the backup to be kept")
        first = complete_backups(backup_dir)[0]
        wait_for(
            lambda: complete_backups(backup_dir)[0].get("verified") is True,
            90,
            "the interrupted run's backup to be verified",
        )
        wait_for(lambda: len(complete_backups(backup_dir)) >= 2, 90, "backups to resume")
        assert complete_backups(backup_dir)[0]["name"] == first["name"]
        assert not list(backup_dir.glob(".*.partial"))
    finally:
        worker.stop(timeout=30)
        server.stop()


def test_thirty_databases_due_at_the_same_minute_are_all_backed_up_once(
    pg_server, tmp_path: Path, redis_url: str, services: Services
) -> None:
    """Promise: the service never silently stops backing up, under load: thirty databases
    whose runs all fall due together each get exactly one backup for their slot. (The
    worker's memory under a fleet is measured by bench/fleet, not asserted here.)"""
    from tests.conftest import create_database

    databases = [create_database(pg_server, f"fleet{n}") for n in range(30)]
    schedule = cron_line_minutes_ago(3)
    config = tmp_path / "bakup.toml"
    config.write_text(
        "".join(
            f'[[targets]]\nname = "db{n}"\nurl_env = "DB{n}_URL"\nschedule = "{schedule}"\n\n'
            for n in range(30)
        )
    )
    urls = {f"DB{n}_URL": database.url for n, database in enumerate(databases)}
    env = worker_env(
        databases[0], tmp_path / "backups", redis_url, BAKUP_CONFIG=str(config), **urls
    )
    worker = services.start("worker", "--beat", "--concurrency", "2", env=env)
    try:
        wait_for(lambda: worker.count("Backup verified successfully") >= 30, 180, "thirty backups")
        wait_for(lambda: worker.count("bakup.catch_up") >= 20, 30, "more catch-up checks")
        for n in range(30):
            assert len(complete_backups(tmp_path / "backups" / f"db{n}")) == 1, n
        # Catch-up may queue a database again while its first message waits behind the
        # others; the run record makes the extra message a skip, never a second backup.
        assert worker.count("Catching up: no backup") >= 30
    finally:
        worker.stop()
        for database in databases:
            pg_server.psql("postgres", f'DROP DATABASE IF EXISTS "{database.name}" WITH (FORCE)')


def test_two_workers_each_with_a_beat_give_exactly_one_backup_per_slot(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services
) -> None:
    """Promise: one backup per scheduled run, whatever is deployed by mistake: two workers,
    each started with --beat, over several slots."""
    backup_dir = tmp_path / "backups"
    env = worker_env(small_db, backup_dir, redis_url, BACKUP_SCHEDULE="every 3s")
    workers = [
        services.start(
            "worker",
            "--beat",
            "--concurrency",
            "2",
            env={**env, "BEAT_SCHEDULE_FILE": str(tmp_path / f"beat-{n}")},
        )
        for n in range(2)
    ]
    wait_for(lambda: len(complete_backups(backup_dir)) >= 5, 90, "five slots")
    for worker in workers:
        worker.stop()
    slots = [
        int(datetime.fromisoformat(backup["created_at"]).timestamp()) // 3
        for backup in complete_backups(backup_dir)
    ]
    assert len(slots) == len(set(slots)), "two backups in one schedule slot"
    assert sum(worker.count("Skipped backup of") for worker in workers) >= 3


def test_postgres_down_through_all_retries_then_back_alerts_once_and_recovers_once(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services, http: HttpReceiver
) -> None:
    """Promise: alerts on outcomes: a slot that used up its retries alerts once on each
    channel; the next slot's success sends one recovery notice."""
    backup_dir = tmp_path / "backups"
    env = worker_env(
        small_db,
        backup_dir,
        redis_url,
        BACKUP_SCHEDULE=cron_line_minutes_ago(3),  # one missed slot: catch-up takes it
        BACKUP_RETRIES="1",
        PG_BIN_DIR=str(flaky_pg_bin(tmp_path / "bin", failures=2)),
        SLACK_WEBHOOK_URL=f"{http.url}/services/T1/B1/token",
    )
    worker = services.start("worker", "--beat", "--concurrency", "2", env=env)
    wait_for(lambda: worker.count("ERROR: Failed to create backup") == 1, 60, "the outcome")
    wait_for(lambda: len(http.requests) == 1, 30, "the alert")
    send_backup(redis_url, small_db.name, scheduled=False)  # the server is back
    wait_for(lambda: worker.count("Backup verified successfully") == 1, 60, "the recovery")
    wait_for(lambda: len(http.requests) == 2, 30, "the alert and the recovery notice")
    assert worker.count("ERROR: Failed to create backup") == 1
    assert worker.count("WARNING: Backup attempt failed, it will be retried") == 1
    bodies = [request.body.lower() for request in http.requests]
    assert b"failed" in bodies[0] and b"recovered" in bodies[1]
    assert len(complete_backups(backup_dir)) == 1


def test_redis_killed_while_idle_and_restarted_empty_lets_backups_go_on(
    small_db: Database, tmp_path: Path, services: Services
) -> None:
    """Promise: the service never silently stops backing up: a Redis restart between runs
    (its data lost) is survived without anyone's help."""
    server = redis_server.start()
    backup_dir = tmp_path / "backups"
    env = worker_env(small_db, backup_dir, server.url(0), BACKUP_SCHEDULE="every 5s")
    worker = services.start("worker", "--beat", "--concurrency", "2", env=env)
    try:
        wait_for(lambda: len(complete_backups(backup_dir)) >= 1, 60, "a first backup")
        wait_for(lambda: "Backup verified successfully" in worker.output(), 30, "its check")
        server.process.kill()
        server.process.wait()
        time.sleep(2)
        server = redis_server.start(server.port)
        before = len(complete_backups(backup_dir))
        wait_for(lambda: len(complete_backups(backup_dir)) >= before + 2, 90, "more backups")
    finally:
        worker.stop(timeout=30)
        server.stop()
