"""Getting the metrics to Prometheus.

- The worker: Celery's prefork pool runs backups in child processes, so the metrics live in
  prometheus-client's multiprocess mode (one file per process in a directory); the main
  process serves /metrics from all of them. Counters of children that exited stay counted, so
  a child's restart never resets them.
- A one-shot `bakup backup` (cron, by hand): pushes its figures to a Pushgateway
  (PUSHGATEWAY_URL, grouped by database, with pushadd so a failed run never erases the last
  success) or writes a node_exporter textfile (METRICS_TEXTFILE), atomically.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any

log = logging.getLogger("bakup")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare_multiprocess_dir(directory: Path) -> None:
    """Empty ``directory`` and point prometheus-client at it. Call before importing it."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    os.environ[MULTIPROC_ENV] = str(directory)


def serve_multiprocess(address: str, port: int) -> Any:
    """Serve /metrics aggregated over every process of the worker; returns the server."""
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    server, _thread = start_http_server(port, addr=address, registry=registry)
    log.info("Serving metrics on http://%s:%d/metrics", address, port)
    return server


def mark_process_dead(pid: int) -> None:
    """Forget the live-only gauges of a child process that exited."""
    if os.environ.get(MULTIPROC_ENV):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)


def publish_once(registry: Any, pushgateway_url: str | None, textfile: str | None) -> None:
    """Send a one-shot run's metrics where configured; logs, never raises, on failure: the
    backup's own outcome must not depend on its metrics."""
    from prometheus_client import pushadd_to_gateway, write_to_textfile

    if pushgateway_url:
        try:
            # pushadd replaces only the series this run sends: every database's, restored
            # from the manifests, so a failed run never erases the last success.
            pushadd_to_gateway(
                pushgateway_url,
                job="bakup",
                grouping_key={"instance": socket.gethostname()},
                registry=registry,
                timeout=10,
            )
        except Exception as error:
            log.warning("WARNING: could not push metrics to the Pushgateway: %s", error)
    if textfile:
        try:
            write_to_textfile(textfile, registry)
        except OSError as error:
            log.warning("WARNING: could not write metrics to %s: %s", textfile, error)
