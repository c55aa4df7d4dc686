"""Alerts and the weekly summary from the running worker: delivered by their own retrying
tasks, counted in the metrics, one alert per incident, one summary per week."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
import redis
from celery import Celery

from tests.conftest import Database
from tests.end_to_end.conftest import Services, send_backup, wait_for, worker_env
from tests.end_to_end.test_metrics import scrape
from tests.support.postgres_server import free_port
from tests.support.receivers import HttpReceiver, SmtpReceiver, start_smtp

pytestmark = pytest.mark.end_to_end


def test_a_failure_alerts_once_through_a_retrying_task_and_is_counted(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services, http: HttpReceiver
) -> None:
    port = free_port()
    wrong = small_db.server.url(small_db.name, password="wrong-SECRET")
    env = worker_env(
        small_db,
        tmp_path / "backups",
        redis_url,
        DATABASE_URL=wrong,
        BACKUP_RETRIES="0",
        METRICS_PORT=str(port),
        SLACK_WEBHOOK_URL=f"{http.url}/services/T1/B1/token-SECRET",
    )
    http.answer((500, {}, b"rollup_error"), (200, {}, b"ok"))
    worker = services.start("worker", "--concurrency", "2", env=env)
    wait_for(lambda: "ready" in worker.output(), 30, "the worker")
    send_backup(redis_url, small_db.name, scheduled=False)
    wait_for(lambda: len(http.requests) == 2, 60, "the alert, retried after the 500")
    series = 'bakup_notifications_total{channel="slack",outcome="success"}'
    wait_for(lambda: scrape(port).get(series) == 1, 30, "the delivery to be counted")

    send_backup(redis_url, small_db.name, scheduled=False)  # same incident: no new alert
    wait_for(lambda: worker.count("ERROR: Failed to create backup") == 2, 30, "the second failure")
    wait_for(lambda: "already reported" in worker.output(), 30, "the incident check")
    assert len(http.requests) == 2
    for text in [worker.output()] + [request.body.decode() for request in http.requests]:
        assert "SECRET" not in text


def test_the_weekly_summary_is_sent_once_even_when_triggered_twice(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services, smtp: SmtpReceiver
) -> None:
    env = worker_env(
        small_db,
        tmp_path / "backups",
        redis_url,
        SMTP_URL=smtp.url,
        ALERT_EMAIL_FROM="bakup@example.com",
        ALERT_EMAIL_TO="ops@example.com",
    )
    worker = services.start("worker", "--concurrency", "2", env=env)
    wait_for(lambda: "ready" in worker.output(), 30, "the worker")
    client = Celery(broker=redis_url)
    for _ in range(2):  # a retry, or a second beat started by mistake
        client.send_task("bakup.summary", queue="bakup")
    wait_for(lambda: len(smtp.messages) == 1, 60, "the summary")
    wait_for(lambda: "already sent" in worker.output(), 30, "the duplicate to be skipped")
    assert smtp.messages[0]["Subject"].startswith("bakup weekly summary")
    assert len(smtp.messages) == 1


def test_an_alert_held_by_a_worker_that_died_is_delivered_within_minutes_not_hours(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services, http: HttpReceiver
) -> None:
    """Promise: every failure is seen within minutes: an alert whose retry was waiting in a
    worker that got SIGKILLed is delivered by the next worker within ALERT_REDELIVERY_SECONDS
    + CATCH_UP_INTERVAL, not after the broker's visibility timeout (BACKUP_TIME_LIMIT + 1 h)."""
    wrong = small_db.server.url(small_db.name, password="wrong")
    env = worker_env(
        small_db,
        tmp_path / "backups",
        redis_url,
        DATABASE_URL=wrong,
        BACKUP_RETRIES="0",
        RETRY_BASE_SECONDS="10",  # the alert's retry waits 5-10 s, held by the worker
        RETRY_MAX_SECONDS="10",
        ALERT_REDELIVERY_SECONDS="3",
        SLACK_WEBHOOK_URL=f"{http.url}/services/T1/B1/token",
    )
    http.answer((503, {}, b"down"), (200, {}, b"ok"))
    first = services.start("worker", "--concurrency", "2", env=env)
    wait_for(lambda: "ready" in first.output(), 30, "the worker")
    send_backup(redis_url, small_db.name, scheduled=False)
    wait_for(lambda: "notification failed, retrying" in first.output(), 60, "a retry to wait")
    first.kill()
    assert len(http.requests) == 1

    started = time.monotonic()
    second = services.start("worker", "--beat", "--concurrency", "2", env=env)
    # Due at its retry time (<= 10 s) + ALERT_REDELIVERY_SECONDS (3), found by the next
    # catch-up check (every 2 s).
    wait_for(lambda: len(http.requests) == 2, 40, "the alert, delivered again")
    assert time.monotonic() - started < 40
    assert "Queueing again a slack alert" in second.output()
    assert b"wrong" not in http.requests[1].body  # no secret in the alert


def test_a_verification_retried_after_transient_failures_alerts_once_for_its_outcome(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services, http: HttpReceiver
) -> None:
    """Promise: alerts on outcomes, not attempts, for verifications too: a test-restore
    server that refuses connections is retried; only the final failure alerts."""
    closed = small_db.url.replace(f":{small_db.server.port}/", f":{free_port()}/")
    env = worker_env(
        small_db,
        tmp_path / "backups",
        redis_url,
        VERIFY_LEVEL="restore",
        VERIFY_DATABASE_URL=closed,
        SLACK_WEBHOOK_URL=f"{http.url}/services/T1/B1/token",
    )
    worker = services.start("worker", "--concurrency", "2", env=env)
    wait_for(lambda: "ready" in worker.output(), 30, "the worker")
    send_backup(redis_url, small_db.name, scheduled=False)
    wait_for(lambda: worker.count("ERROR: Verification failed") == 1, 60, "the outcome")
    wait_for(lambda: len(http.requests) == 1, 30, "the alert")
    assert worker.count("WARNING: Verification attempt failed, it will be retried") == 2
    time.sleep(2)
    assert len(http.requests) == 1
    assert b"verification" in http.requests[0].body


def test_smtp_down_then_back_delivers_later_and_a_slack_404_is_not_retried(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services, http: HttpReceiver
) -> None:
    """Promise: every failure is seen: an outage of the mail server delays the alert, it does
    not lose it; a webhook that no longer exists (404) is not hammered."""
    smtp_port = free_port()  # nothing listens there yet
    wrong = small_db.server.url(small_db.name, password="wrong")
    env = worker_env(
        small_db,
        tmp_path / "backups",
        redis_url,
        DATABASE_URL=wrong,
        BACKUP_RETRIES="0",
        SMTP_URL=f"smtp://127.0.0.1:{smtp_port}",
        ALERT_EMAIL_FROM="bakup@example.com",
        ALERT_EMAIL_TO="ops@example.com",
        SLACK_WEBHOOK_URL=f"{http.url}/services/T1/B1/gone",
    )
    http.answer((404, {}, b"no_service"))
    worker = services.start("worker", "--concurrency", "2", env=env)
    wait_for(lambda: "ready" in worker.output(), 30, "the worker")
    send_backup(redis_url, small_db.name, scheduled=False)
    wait_for(lambda: "email notification failed, retrying" in worker.output(), 60, "a retry")
    smtp = start_smtp(smtp_port)  # the mail server is back
    try:
        wait_for(lambda: len(smtp.messages) == 1, 60, "the alert by email, later")
        assert "failed" in smtp.messages[0]["Subject"]
    finally:
        smtp.stop()
    assert len(http.requests) == 1  # the 404 was not retried
    assert worker.count("ERROR: slack notification not delivered") == 1


def test_a_recovery_notice_follows_an_incident_that_redis_forgot(
    small_db: Database, tmp_path: Path, redis_url: str, services: Services, http: HttpReceiver
) -> None:
    """Promise: every incident ends with a recovery notice, even when Redis lost its data
    in between: the incident is rebuilt from the run journal beside the backups."""
    wrong = small_db.server.url(small_db.name, password="wrong")
    env = worker_env(
        small_db,
        tmp_path / "backups",
        redis_url,
        BACKUP_RETRIES="0",
        SLACK_WEBHOOK_URL=f"{http.url}/services/T1/B1/token",
    )
    failing = services.start("worker", env={**env, "DATABASE_URL": wrong})
    wait_for(lambda: "ready" in failing.output(), 30, "the worker")
    send_backup(redis_url, small_db.name, scheduled=False)
    wait_for(lambda: len(http.requests) == 1, 60, "the alert")
    assert failing.stop() == 0
    redis.Redis.from_url(redis_url).flushdb()  # Redis restarted empty: the incident is gone

    healed = services.start("worker", env=env)
    wait_for(lambda: "ready" in healed.output(), 30, "the worker")
    send_backup(redis_url, small_db.name, scheduled=False)
    wait_for(lambda: len(http.requests) == 2, 60, "the recovery notice")
    assert b"recovered" in http.requests[1].body.lower()
    assert "rebuilt from the run journal" in healed.output()


@pytest.mark.parametrize("fault", ["object store down", "disk full"])
def test_a_storage_fault_under_the_worker_is_retried_then_alerted_once_leaving_nothing(
    small_db: Database,
    tmp_path: Path,
    redis_url: str,
    services: Services,
    http: HttpReceiver,
    fault: str,
) -> None:
    """Promise: every failure is seen, and nothing partial is kept: the store unreachable for
    the whole run, or the disk full, is retried, then reported once."""
    from tests.integration.faults import is_root, small_filesystem
    from tests.support import s3_server

    extra: dict[str, str] = {}
    with contextlib.ExitStack() as stack:
        if fault == "object store down":
            server = s3_server.start()
            server.create_bucket("backups")
            extra = {"STORAGE_URL": "s3://backups/prod", **server.env()}
            server.stop()  # down for the whole run
        else:
            if not is_root():
                pytest.skip("mounts a file system")
            small_db.psql(
                "CREATE TABLE filler AS SELECT g, md5(g::text) || md5((g * 7)::text) AS v "
                "FROM generate_series(1, 60000) g"
            )
            folder = stack.enter_context(small_filesystem(tmp_path / "full", "1m"))
            extra = {"BACKUP_DIR": str(folder), "COMPRESSION": "none"}
        env = worker_env(
            small_db,
            tmp_path / "unused",
            redis_url,
            BACKUP_RETRIES="1",
            SLACK_WEBHOOK_URL=f"{http.url}/services/T1/B1/token",
            **extra,
        )
        worker = services.start("worker", "--concurrency", "2", env=env)
        wait_for(lambda: "ready" in worker.output(), 30, "the worker")
        send_backup(redis_url, small_db.name, scheduled=False)
        wait_for(lambda: worker.count("ERROR: Failed to create backup") == 1, 60, "the outcome")
        wait_for(lambda: len(http.requests) == 1, 30, "one alert")
        assert worker.count("WARNING: Backup attempt failed, it will be retried") == 1
        time.sleep(2)
        assert len(http.requests) == 1
        if fault == "disk full":
            assert "no space left" in worker.output()
            left = [p.name for p in (tmp_path / "full").iterdir()]
            assert not [name for name in left if "postgres_backup_" in name], left
        worker.stop()


def test_the_object_store_dying_mid_upload_under_the_worker_fails_once_and_alerts_once(
    big_db: Database, tmp_path: Path, redis_url: str, services: Services, http: HttpReceiver
) -> None:
    """Promise: every failure is seen, nothing partial is kept: the store going away while a
    scheduled backup uploads ends in one failure and one alert."""
    from tests.integration.faults import pausing_pg_bin
    from tests.support import s3_server

    server = s3_server.start()
    server.create_bucket("backups")
    client = server.client()
    slow = pausing_pg_bin(tmp_path / "bin", pause_after_bytes=12_000_000, pause_seconds=5)
    env = worker_env(
        big_db,
        tmp_path / "unused",
        redis_url,
        STORAGE_URL="s3://backups/prod",
        COMPRESSION="none",
        PG_BIN_DIR=str(slow),
        BACKUP_RETRIES="0",
        SLACK_WEBHOOK_URL=f"{http.url}/services/T1/B1/token",
        **server.env(),
    )
    worker = services.start("worker", "--concurrency", "2", env=env)
    try:
        wait_for(lambda: "ready" in worker.output(), 30, "the worker")
        send_backup(redis_url, big_db.name, scheduled=False)
        wait_for(
            lambda: bool(client.list_multipart_uploads(Bucket="backups").get("Uploads")),
            60,
            "the upload to be under way",
        )
    finally:
        server.stop()
    wait_for(lambda: worker.count("ERROR: Failed to create backup") == 1, 120, "the failure")
    wait_for(lambda: len(http.requests) == 1, 30, "one alert")
    assert "the store could not be reached" in worker.output()
    time.sleep(2)
    assert len(http.requests) == 1
