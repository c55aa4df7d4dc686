"""Metrics in the worker: the recorder subscribed in every process, /metrics served by the
main process from prometheus-client's multiprocess files, dead children forgotten, and the
gauges restored from storage by a pool child, never by the main process that forks.

Active only when `bakup worker` prepared the multiprocess directory (METRICS_PORT not 0).
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery.signals import worker_init, worker_process_shutdown

from bakup import events
from bakup.settings import Settings
from notifications.config import NotifySettings

log = logging.getLogger("bakup")

_recorder: Any = None  # the Recorder, when metrics are on


def install(settings: Settings, notify: NotifySettings) -> None:
    """Subscribe the metrics recorder and hook the worker's signals, if metrics are on."""
    from metrics.exposition import MULTIPROC_ENV

    if not os.environ.get(MULTIPROC_ENV) or not settings.metrics_port:
        return
    from metrics.definitions import create_metrics
    from metrics.exposition import mark_process_dead, serve_multiprocess
    from metrics.recorder import Recorder

    global _recorder
    recorder = _recorder = Recorder(create_metrics())
    events.subscribe(recorder)  # before the fork: every child inherits the subscription

    @worker_init.connect(weak=False)
    def _serve(**_: Any) -> None:
        channels = tuple(channel.name for channel in notify.channels)
        # No storage is read here, in the process that forks the pool: see restore_gauges.
        recorder.initialize(settings, channels + (("healthcheck",) if notify.healthcheck else ()))
        try:
            serve_multiprocess(settings.metrics_address, settings.metrics_port)
        except OSError as error:  # backups go on without /metrics; the target-down alert fires
            log.error(
                "ERROR: cannot serve metrics on %s:%d (%s): set METRICS_PORT to a free port",
                settings.metrics_address,
                settings.metrics_port,
                error.strerror,
            )

    @worker_process_shutdown.connect(weak=False)
    def _forget(pid: int | None = None, **_: Any) -> None:
        mark_process_dead(pid or os.getpid())


def restore_gauges(settings: Settings) -> bool:
    """Set the gauges from the stored backups. Runs in a pool child (the ``restore_metrics``
    task, queued when the worker is ready): reading an object store starts obstore's runtime
    threads, which a later fork of the main process would copy without their state, leaving
    the children hung. Returns whether metrics are on."""
    if _recorder is None:
        return False
    _recorder.restore_stored(settings)
    return True
