"""The Celery application: broker, delivery guarantees, time limits and the beat table.

Delivery: tasks are acknowledged when they start (not ``acks_late``). A long backup can then
never be delivered twice by the Redis broker's visibility timeout; a backup lost because its
worker died is taken again by the catch-up check, which finds the schedule slot without a
backup once the dead worker's lock has expired. Every run is idempotent per slot anyway
(``worker.locks``), so a duplicate message is skipped, not run twice.
"""

from __future__ import annotations

import logging
import os
import signal
from typing import Any

import redis
from celery import Celery
from celery.signals import after_setup_logger, beat_embedded_init, worker_ready

from bakup.logs import configure_logging
from bakup.pgtools import die_with_parent
from notifications.wire import subscribe_with, to_message
from worker import observability, outbox, runtime
from worker.beat_schedule import (
    CATCH_UP_TASK,
    NOTIFY_TASK,
    RESTORE_METRICS_TASK,
    build_beat_schedule,
)

QUEUE = "bakup"
# The process that imported the app: with `bakup worker --beat`, the worker that forks beat.
_STARTER_PID = os.getpid()


def create_app() -> Celery:
    """Build the Celery app from the environment. Raises ConfigError if it is invalid."""
    settings = runtime.settings()
    broker = settings.require_redis()
    app = Celery("bakup", broker=broker, backend=broker, include=["worker.tasks"])
    limit = settings.backup_time_limit
    app.conf.update(
        task_default_queue=QUEUE,
        task_acks_late=False,
        worker_prefetch_multiplier=1,
        # Messages reserved but not yet started stay unacknowledged: keep them invisible to
        # other workers for longer than any task may run, in every place Redis reads it.
        broker_transport_options={"visibility_timeout": limit + 3600},
        result_backend_transport_options={"visibility_timeout": limit + 3600},
        visibility_timeout=limit + 3600,
        task_time_limit=limit,
        task_soft_time_limit=max(limit - 60, 1),
        result_expires=24 * 3600,
        task_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        beat_schedule=build_beat_schedule(settings, runtime.notify_settings().summary_schedule),
        beat_schedule_filename=str(settings.beat_schedule_file),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    return app


app = create_app()


def queue_delivery(channel: str, payload: Any) -> None:
    """Queue the delivery of ``payload`` (a notification or a ping) over ``channel``, first
    recorded in the outbox so that a worker dying with it cannot lose it (``worker.outbox``).
    Raises what the broker raises when the task cannot be queued."""
    message = to_message(payload)
    entry = None
    try:
        entry = outbox.post(
            runtime.redis_client(), channel, message, runtime.settings().alert_redelivery_seconds
        )
    except redis.RedisError as error:  # still try the broker: it may be reachable
        logging.getLogger("bakup").warning(
            "WARNING: the %s alert is sent without a redelivery record: %s", channel, error
        )
    app.send_task(NOTIFY_TASK, args=[channel, message, entry], queue=QUEUE)


observability.install(runtime.settings(), runtime.notify_settings())
subscribe_with(runtime.settings(), runtime.notify_settings(), queue_delivery)


@after_setup_logger.connect
def _use_script_log_format(**_: Any) -> None:
    configure_logging(logging.INFO)


@beat_embedded_init.connect
def _die_with_the_worker(**_: Any) -> None:
    # `bakup worker --beat` runs beat in a child process; a worker killed with SIGKILL would
    # leave it behind, queueing backups nobody takes, and a second beat once the worker is
    # restarted. SIGTERM (not SIGKILL) lets beat save its schedule file on the way out.
    die_with_parent(signal.SIGTERM)
    if os.getppid() != _STARTER_PID:  # the worker died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


@worker_ready.connect
def _catch_up_on_start(sender: Any = None, **_: Any) -> None:
    # A worker that starts after a scheduled time was missed (machine down at 02:00) checks
    # at once rather than at the next periodic check; and once more when the lock of a worker
    # that died mid-backup has surely expired, so its backup is retaken even without beat.
    try:
        app.send_task(RESTORE_METRICS_TASK, queue=QUEUE)
        app.send_task(CATCH_UP_TASK, queue=QUEUE)
        app.send_task(CATCH_UP_TASK, queue=QUEUE, countdown=runtime.settings().lock_ttl + 1)
    except Exception as error:  # never keep the worker from starting
        logging.getLogger("bakup").warning("WARNING: catch-up check not queued: %s", error)
